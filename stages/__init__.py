"""The pipeline's stage scripts, one per dvc.yaml stage, run as ``python -m stages.<name>`` from the project
root: the root is then first on the import path, so a stage imports the ``trustdd`` beside it (in a DVC
experiment's temporary workspace, that workspace's code), never another checkout's installed copy."""
