"""TensorRT engines built from an engine folder's stage graphs (`vinci-edge build-engines`):
plan.py decides what to build (pure Python), build.py calls TensorRT, cli.py is the command."""
