"""Checks of deploy/: the Dockerfile, compose file and Kubernetes manifests, offline."""
