"""Steering: adding vectors to a model's decoder layers at inference time.

This room owns the :class:`~autosteer.steering.steer.Steer` handle (hooks on the
decoder layers, through the C core ``autosteer._C`` on CPU and the torch
fallback hook elsewhere), the directions and contrastive concepts, the
coefficient schedules, the lookup of decoder layers in transformers models, and
steering-vector files (safetensors, GGUF control vectors).

It may import the C core, :mod:`autosteer.errors` and :mod:`autosteer._checks`;
it never imports :mod:`autosteer.search`.  Inside, imports run one way:
``steer`` -> ``concept``, ``vectors``, ``schedules``, ``layers``, ``_torch_hook``;
``vector_file`` -> ``concept``, ``vectors``, ``schedules`` (it fills a ``Steer``
through its public methods and never imports ``steer``, which calls it only
from ``Steer.save``/``Steer.load``).
"""
