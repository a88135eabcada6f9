"""Resumable, sharded inference jobs: ``--output-dir DIR`` on every inference command.

The on-disk protocol (:mod:`llmtool.jobs.parts`, :mod:`llmtool.jobs.manifest`) keeps a job correct
whoever runs it: one process, torchrun, a Slurm array, a Kubernetes indexed job (:mod:`llmtool.jobs.shard`)
or a Ray actor pool (:mod:`llmtool.jobs.ray_executor`). :mod:`llmtool.jobs.run` runs a command's own task
over the chunks; :mod:`llmtool.jobs.status` reads a job directory back. See docs/large-jobs.md.
Nothing here imports torch, transformers or Ray at module level.
"""
