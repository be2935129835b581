"""One thin script per DVC stage: read params, call the library (`pipeline`), write artifacts.

dvc.yaml runs each as `python -m stages.<name>` from the project root, so the stage imports this checkout's
`pipeline` (also in a `dvc exp run --temp` or queued experiment's own copy), never another clone's.
"""
