"""The operations' reads and writes of the catalog (config/models.yaml, parsed in catalog.py):
a broken file refuses every change (409), a write that fails is a clear error, not a 500, and
no two models share a name or alias."""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.errors import ApiError
from contract.spec import ModelSpec

from . import catalog as catalog_file
from .errors import catalog_not_saved


class CatalogEdits:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writing = asyncio.Lock()  # one write at a time: each edits the text the last one left
        self.defaults = catalog_file.CatalogDefaults()  # as last read (every read and write updates it)

    def read(self) -> dict[str, ModelSpec]:
        """The declared specs (raises catalog.CatalogError; any thread). Its defaults are kept."""
        specs = catalog_file.load_catalog(self.path)
        self.defaults = catalog_file.load_defaults(self.path)
        return specs

    def effective(self, spec: ModelSpec) -> ModelSpec:
        """The spec as its instance is made: the catalog's default image when it names none (the
        spec's own `image` wins; without a default either, the runtime's stack image)."""
        default = self.defaults.llama_image
        return spec if spec.image or not default else spec.model_copy(update={"image": default})

    async def set_defaults(self, defaults: catalog_file.CatalogDefaults) -> None:
        await self._update(lambda text: catalog_file.render_with_defaults(text, defaults))
        self.defaults = defaults

    async def read_or_409(self) -> dict[str, ModelSpec]:
        try:
            return await asyncio.to_thread(self.read)
        except catalog_file.CatalogError as exc:
            raise ApiError(409, f"The catalog cannot be read, so nothing was changed: {exc}. Fix the file first.",
                           "catalog_invalid") from None

    async def declare(self, spec: ModelSpec) -> None:
        await self._update(lambda text: catalog_file.render_with_model(text, spec))

    async def undeclare(self, name: str) -> None:
        await self._update(lambda text: catalog_file.render_without_model(text, name))

    async def _update(self, change) -> None:
        """Write the catalog; a full or read-only filesystem is a clear error, not a 500."""
        async with self._writing:
            try:
                await asyncio.to_thread(catalog_file.update_catalog, self.path, change)
            except OSError as exc:
                raise catalog_not_saved(self.path, exc) from None


def check_names_free(spec: ModelSpec, specs: dict[str, ModelSpec]) -> None:
    """409 when a name or alias of ``spec`` is already another model's."""
    taken = {}
    for other in specs.values():
        if other.name != spec.name:
            for n in (other.name, *other.aliases):
                taken[n.casefold()] = other.name
    for n in (spec.name, *spec.aliases):
        if n.casefold() in taken:
            raise ApiError(409, f"'{n}' is already a name or alias of model '{taken[n.casefold()]}'.",
                           "name_taken", "aliases" if n != spec.name else "name")
