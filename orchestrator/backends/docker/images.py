"""The llama-server image a model runs from, on this engine: there already, or pulled. Both the
engine and the swarm backend (for the manager's own copy) use it."""

from __future__ import annotations

import logging

import docker
import docker.errors

from common.errors import ApiError

log = logging.getLogger("llamadock.orchestrator")


def ensure_local_image(client: docker.DockerClient, image: str) -> None:
    """``image`` is on this engine (pulled if need be); ApiError 400 ``image_unavailable`` when it
    cannot be, naming why (a name Docker refuses, or a failed pull)."""
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError as exc:  # not a name an image can have ("invalid reference format")
        raise ApiError(400, f"{image!r} is not an image name Docker accepts ({exc.explanation or exc}).",
                       "image_unavailable", "image") from None
    log.info("pulling %s", image)
    try:
        client.images.pull(image)
    except docker.errors.DockerException as exc:  # APIError, or a name the SDK refuses itself
        raise ApiError(400, f"The image {image} is not on this machine and could not be pulled "
                       f"({getattr(exc, 'explanation', None) or exc}). Build one with `make llama-image` "
                       "or set LLAMADOCK_LLAMA_IMAGE_CPU / _GPU.", "image_unavailable", "image") from None
