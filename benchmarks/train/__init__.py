"""The reference training: every sslosses method on a real encoder, judged by kNN and linear probes.

Run it from the repository root as ``python -m benchmarks.train`` (``--help`` lists the options).
It uses only sslosses' losses and components (plus plain torch for the networks), so it doubles
as a worked example and as the end-to-end test that the losses actually train something.

Quick start (CPU, bundled scikit-learn digits, all methods in a few minutes)::

    python -m benchmarks.train --method all --out runs/default

Other data (no downloads: the files must already be on disk)::

    python -m benchmarks.train --method byol --data fashion-mnist  # Debian: dataset-fashion-mnist
    torchrun --nproc_per_node=8 -m benchmarks.train --method simclr --data cifar10 \\
        --data-dir ~/data/cifar-10-batches-py --backbone resnet18 --width 64 --batch-size 512 \\
        --steps 78000 --eval-every 3900 --out runs/cifar10

Each run writes ``<out>/<run>/metrics.jsonl`` (one JSON line per epoch),
``<out>/<run>/checkpoint.pt`` and, once finished, ``<out>/<run>/result.json``, where ``<run>``
is the method (``<method>-seed<S>`` for a seed other than 0); rerunning the same command
resumes from the checkpoint (a finished run is only reported). ``<out>/results.md``,
``results.json`` and ``results.png`` hold the table of every finished run in ``<out>`` and the
accuracy / loss curves (``--report`` writes them without training). See
``docs/guides/training.rst``.

The modules, in the order a run uses them:

- :mod:`~benchmarks.train.config`: the command line, the per-data presets and the per-method
  settings with their sources;
- :mod:`~benchmarks.train.data`: the dataset readers (uint8 tensors, nothing downloaded);
- :mod:`~benchmarks.train.views`: the augmentations (``sslosses.transforms``);
- :mod:`~benchmarks.train.networks`: the ResNet encoder;
- :mod:`~benchmarks.train.methods`: one module per method (heads from ``sslosses.heads``, one
  sslosses loss each): the part to copy into a training loop of one's own;
- :mod:`~benchmarks.train.loop`: evaluation, runtime (device, DDP, checkpoints), training, ``main``;
- :mod:`~benchmarks.train.probes`: the kNN and linear probes;
- :mod:`~benchmarks.train.report`: the table, JSON and plot of the finished runs;
- :mod:`~benchmarks.train.state`: RNG state, atomic saves, autocast;
- :mod:`~benchmarks.train.reference`: the committed digits tables ``make train`` compares with.
"""
