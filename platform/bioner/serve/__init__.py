"""Serving on Ray Serve: the Tagger behind a FastAPI ingress, requests batched across clients,
inputs bounded, and the registry alias (`models:/NAME@champion`) followed without dropping a
request. `config` (the options), `follow` (which model answers; no Ray), `api` (the HTTP
routes; no Ray), `server` (one replica), `ingress` (HAProxy or Serve's proxy in front, chosen before a local Ray
starts), `deploy` (Serve start-up and shut-down)."""
