"""Shared by the tests that edit params."""


def apply_overrides(params: dict, **changes) -> dict:
    """Set nested keys of a params mapping in place; a key ``a__b__c`` means ``params[a][b][c]``."""
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = params
        for key in path:
            node = node[key]
        node[last] = value
    return params
