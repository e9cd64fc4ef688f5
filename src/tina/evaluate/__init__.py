"""Evaluation of a trained Tina against its baselines: one function per experiment of the paper.

The modules, bottom up: :mod:`~tina.evaluate.context` (what an experiment reads: the trained
Tina, the data, the tasks and the zoo; sampling Tina), :mod:`~tina.evaluate.records` (the record
format and the records of each method), :mod:`~tina.evaluate.experiments` (the registry of
experiments, the single source of the experiment list) and :mod:`~tina.evaluate.novelty`.
Reporting (:mod:`tina.report`) reads the records; nothing here imports it.

Every experiment returns *records*: one row per (method, setting, task, sample) with columns
``experiment, setting, method, split, task_id, k, sample, accuracy, seconds``; accuracies are
fractions in [0, 1] on the task's test images, ``seconds`` the time to produce one model (NaN
where not measured).

Protocol, shared by all experiments:

- Tina draws ``samples`` nets per task. Sample ``s`` of every task of a setting comes from one
  batched :meth:`Tina.generate` call seeded ``derive_seed(seed, "eval", experiment, s)``: the
  seed is the same for every setting of an experiment, so settings that batch the same tasks
  are compared under the same sampler noise (paired), and the class-order experiment changes
  nothing but the order. ``seconds`` is the batched generation time divided by the tasks.
- Class-name prompts carry their class ids (the names match the data set's classes, as
  ``tina generate`` does), so Tina starts from the generic rows of seen classes. Descriptions
  and image prompts carry no class id: Tina gets the prompt alone (neutral base rows), and the
  description experiment runs class names the same way (setting ``names``) for reference.
- ``pmodel`` (the fine-tuned p-model of the very test task, never shown to Tina: the upper
  bound) and ``generic_selection`` (the generic model with classifier selection) come from the
  zoo's table; ``chance`` is 1/k; ``majority`` always predicts the task's most frequent class
  in its training images, scored on its test images.
- ``retrieval``, ``ridge`` and ``hypernetwork`` are deterministic functions of the class names:
  :func:`~tina.evaluate.records.evaluate_baselines` scores them once on every test task, and the
  experiments that report them pick their tasks' rows
  (:func:`~tina.evaluate.records.baseline_records`).
"""
