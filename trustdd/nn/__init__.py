"""What every stage that trains a network shares: the architectures (:mod:`.networks`), the training
loop (:mod:`.training`), differentiable augmentation (:mod:`.augment`) and the losses (:mod:`.losses`)."""
