"""Which maps lookupd serves. Each feature adds its factory to MAP_FACTORIES with a
one-line edit; a factory returns a LookupMap (served over socketmap under its ``name``)
or None when the feature is switched off in the settings."""

from __future__ import annotations

from collections.abc import Callable

from aliasd.config import Settings
from aliasd.db import Database
from aliasd.lookup import access_map, srs_maps, virtual_map
from aliasd.lookup.maps import LookupMap

MapFactory = Callable[[Settings, Database], LookupMap | None]

MAP_FACTORIES: list[MapFactory] = [
    virtual_map.build,  # virtual_alias_maps / virtual_alias_domains
    srs_maps.build_forward,  # sender_canonical_maps (SRS), None when SRS is off
    srs_maps.build_reverse,  # recipient_canonical_maps (SRS), None when SRS is off
    access_map.build,  # check_sender_access: blocked sender domains
]


def build_maps(settings: Settings, database: Database) -> dict[str, LookupMap]:
    maps: dict[str, LookupMap] = {}
    for factory in MAP_FACTORIES:
        lookup_map = factory(settings, database)
        if lookup_map is None:
            continue
        if lookup_map.name in maps:
            raise ValueError(f"two maps are named {lookup_map.name!r}")
        maps[lookup_map.name] = lookup_map
    return maps
