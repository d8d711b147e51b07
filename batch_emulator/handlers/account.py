"""Account-wide operations over HTTP: the supported images."""

from __future__ import annotations

from ..state.images import IMAGE_FIELDS, SUPPORTED_IMAGES


class AccountHandlers:
    def list_supported_images(self, request, body):
        return self.page(request, SUPPORTED_IMAGES, IMAGE_FIELDS, lambda i: i.json(), "supportedimages")
