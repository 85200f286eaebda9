"""The PNG plot of one daily field: valid, deterministic, small, fast, in the bands' colours."""

from __future__ import annotations

import io
import time
from collections import Counter

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from picsel_nb import era5
from picsel_nb.contours.styles import bands_for, default_levels
from picsel_nb.plots import DPI, FIGSIZE, plot_day
from picsel_nb.settings import DEMO_DATASET

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fields():
    """The demo area's daily fields of 2023-09-01 (synthetic ERA5-Land)."""
    hourly = era5.synthetic(DEMO_DATASET, "2023-09-01", "2023-09-02")
    day = era5.daily(hourly, DEMO_DATASET, days=["2023-09-01"]).isel(date=0)
    return {name: day[name] for name in ("t2m", "tp")}


def pixel_colours(png: bytes) -> Counter:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return Counter(to_hex(rgb / 255) for rgb in pixels)


def painted(colours: Counter) -> set[str]:
    """The colours covering areas: frequent and not grey (text, axes, lines and their
    anti-aliased edges are grey or rare)."""
    return {colour for colour, count in colours.items()
            if count > 1000 and len({colour[1:3], colour[3:5], colour[5:7]}) > 1}


@pytest.mark.parametrize("variable", ["t2m", "tp"])
def test_plot_is_a_small_valid_png(fields, variable):
    png = plot_day(fields[variable])
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert image.size == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert len(png) < 400_000


@pytest.mark.parametrize("variable", ["t2m", "tp"])
def test_same_field_gives_the_same_bytes(fields, variable):
    assert plot_day(fields[variable]) == plot_day(fields[variable])


@pytest.mark.parametrize("variable", ["t2m", "tp"])
def test_areas_are_painted_in_the_bands_colours(fields, variable):
    """Every colour covering a sizeable area is a band's fill, and every band the data reaches
    shows up in its own fill."""
    field = fields[variable]
    levels = default_levels(variable, field.values)
    fills = {band.fill for band in bands_for(variable, levels, below=True, above=True)}
    colours = pixel_colours(plot_day(field))
    areas = painted(colours)
    assert areas and areas <= fills, areas - fills
    values = field.values[np.isfinite(field.values)]
    for band in bands_for(variable, levels, below=False, above=False):
        if ((values > band.lower) & (values <= band.upper)).sum() > 50:
            assert colours[band.fill] > 0, f"band {band.label} ({band.fill}) is not painted"


def test_explicit_levels_choose_the_bands(fields):
    levels = [0, 5, 50]
    colours = pixel_colours(plot_day(fields["tp"], levels))
    fills = {band.fill for band in bands_for("tp", np.array(levels, float), True, True)}
    assert painted(colours) <= fills


def test_levels_that_do_not_increase_are_refused(fields):
    with pytest.raises(ValueError, match="increasing"):
        plot_day(fields["tp"], [5, 1])


def test_plot_of_the_demo_area_takes_under_a_third_of_a_second(fields):
    plot_day(fields["t2m"])  # fonts and colormaps load once
    best = min(_timed(plot_day, fields[name]) for name in ("t2m", "tp") for _ in range(3))
    assert best < 0.3


def _timed(function, *args) -> float:
    began = time.perf_counter()
    function(*args)
    return time.perf_counter() - began
