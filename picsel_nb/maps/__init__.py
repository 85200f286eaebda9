"""Maps of the published contours: interactive folium pages and static cartopy figures.

Both read the products from the output bucket's public URLs, as anyone would, and draw them on an
offline Natural Earth basemap. ``day_map`` / ``publish_day_map`` make the interactive page of a
day; ``static_map`` and ``small_multiples`` the static figures.
"""

from picsel_nb.maps.basemap import BasemapWarning, natural_earth_dir
from picsel_nb.maps.interactive import (
    ONLINE_ENV,
    band_pane,
    day_map,
    isoline_pane,
    map_key,
    online,
    publish_day_map,
    render_html,
)
from picsel_nb.maps.sources import (
    ProductNotPublishedError,
    Source,
    product_url,
    read_frame,
    read_geojson,
)
from picsel_nb.maps.static import save_png, small_multiples, static_map

__all__ = [
    "ONLINE_ENV", "BasemapWarning", "ProductNotPublishedError", "Source", "band_pane", "day_map",
    "isoline_pane", "map_key", "natural_earth_dir", "online", "product_url", "publish_day_map",
    "read_frame", "read_geojson", "render_html", "save_png", "small_multiples", "static_map",
]
