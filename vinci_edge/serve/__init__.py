"""Serving live sessions for many cameras on NVIDIA Triton Inference Server (`vinci-edge serve`):
`server` binds the models with PyTriton, `streams` keeps one live session per camera (admission,
expiry, isolation), `remote_source` is a camera's media as a live source, `triton_stages` the stage
runners that call the served vision and audio models."""
