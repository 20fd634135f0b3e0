"""Serving live sessions for many cameras on NVIDIA Triton Inference Server (`vinci-edge serve`):
`server` binds the models with PyTriton, `streams` keeps one live session per camera (admission,
expiry, isolation), `remote_source` is a camera's media as a live source, `triton_stages` the stage
runners that call the served vision and audio models. The other side: `client` (`RemoteSession`, a
live session on a server; `client_transport`, the gRPC calls; `client_cli`, `vinci-edge
serve-client`), and `repository` (the engine as a model repository for a standalone tritonserver;
`repository_models`, its Python-backend models)."""
