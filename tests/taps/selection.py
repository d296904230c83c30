"""Run a tap on some of its streams only, as Meltano's ``select`` does through the catalog.

Each tap emits several canonical streams; a test about one of them selects just that one, so
that adding a stream to a tap changes no other stream's test (nor makes it call endpoints a
mocked server does not know).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.singerlib import Catalog

if TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk import Tap


def catalog_of(
    tap_class: type[Tap], config: dict[str, Any], streams: Iterable[str]
) -> dict[str, Any]:
    """The tap's catalog with only ``streams`` selected."""
    wanted = set(streams)
    tap = tap_class(config=config, parse_env_config=False, validate_config=False)
    catalog = Catalog.from_dict(tap.catalog_dict)
    unknown = wanted - {entry.tap_stream_id for entry in catalog.streams}
    assert not unknown, f"{tap_class.__name__} has no stream {sorted(unknown)}"
    for entry in catalog.streams:
        entry.metadata.root.selected = entry.tap_stream_id in wanted
    return catalog.to_dict()
