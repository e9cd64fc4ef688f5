"""The generic model and the zoo of personalised models (p-models) that Tina learns from.

- :mod:`tina.zoo.finetune`: training the generic model, classifier selection and the batched
  fine-tuning of p-models;
- :mod:`tina.zoo.store`: the :class:`~tina.zoo.store.Generic` and :class:`~tina.zoo.store.Zoo`
  the workflow stores, their files, and the sharding of the task table.
"""
