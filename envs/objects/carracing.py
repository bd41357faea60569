"""CarRacing's road, grass, kerb and car, drawn from the env's own geometry with the env's own camera.

Gymnasium's CarRacing draws the world on a 1000x800 canvas (`_render`: the camera's angle, zoom and translation
from the car's hull and the time), flips it, paints the dashboard and shrinks it to 96x96 with `smoothscale`. Here
the same polygons go through the same transform (envs.fast_car_racing's bit-exact rotation) and the same
rasterisers (gfxdraw for the field and the track, pygame.draw for the car's fixtures) onto two canvases whose
colour channels are class indicators (road, grass, kerb | car); flipped and shrunk by the same `smoothscale`,
each channel of a stored pixel is the share of that pixel's footprint the class covers, and the pixel gets the
class that covers most of it. The grass is the playfield and its lighter patches. The dashboard (the black bar
under the world, its indicators and the score) and the black outside the playfield are label 0, nothing.

Checked against the stored frame: each labelled pixel's colour, matched to the nearest colour the env paints
(road tiles, grass, kerb red and white, the car's hull, wheels and wheel stripes), agrees with its class; counted
over all the pixels a class is the label of (edge pixels blend two classes' colours, so the small car and the thin
kerb agree less) and over the pixels a class covers whole (where geometry and frame must agree exactly).
"""

import numpy as np
import pygame
from gymnasium.envs.box2d.car_dynamics import WHEEL_COLOR, WHEEL_WHITE
from gymnasium.envs.box2d.car_racing import SCALE, STATE_H, STATE_W, WINDOW_H, WINDOW_W, ZOOM
from pygame import gfxdraw

from envs.fast_car_racing import BAR_TOP, CULL_MARGIN_PX, FIELD_POLYGON, _pygame_rotation
from envs.objects import EXTRACTORS
from envs.objects.base import Found, FrameObjects, add_check

LABELS = ("road", "grass", "kerb", "car")
NOTHING = "nothing"  # the dashboard and the black outside the playfield
KERB_COLOURS = ((255, 255, 255), (255, 0, 0))  # the red-white border tiles of hard turns
KERB_PINK = (255, 128, 128)  # a stored pixel over a red and a white kerb tile: their blend
TILE_SHADES = (0.0, 0.01 * 255, 0.02 * 255)  # road tile i is road_color + 0.01 (i % 3) 255 (gymnasium)
HULL_COLOUR = tuple(int(c * 255) for c in (0.8, 0.0, 0.0))  # the hull's colour as car.draw paints it
ON = 255  # an indicator channel where its class covers the canvas pixel
TILE_VERTICES = 4
AGREEMENT_FLAG = 0.98  # a frame whose whole pixels agree less with their colours is flagged


def camera(env) -> tuple[float, float, float, float, float]:
    """(cos, sin, zoom, translation x, translation y) of CarRacing._render for the env's current state."""
    angle = -env.car.hull.angle
    zoom = 0.1 * SCALE * max(1 - env.t, 0) + ZOOM * SCALE * min(env.t, 1)
    cos_a, sin_a = _pygame_rotation(angle)
    scroll_x = -env.car.hull.position[0] * zoom
    scroll_y = -env.car.hull.position[1] * zoom
    tx = WINDOW_W / 2 + (cos_a * scroll_x - sin_a * scroll_y)
    ty = WINDOW_H / 4 + (sin_a * scroll_x + cos_a * scroll_y)
    return cos_a, sin_a, zoom, tx, ty


def to_canvas(points: np.ndarray, view: tuple[float, float, float, float, float]) -> np.ndarray:
    """World points [..., 2] -> canvas pixels [..., 2], as gymnasium transforms each vertex."""
    cos_a, sin_a, zoom, tx, ty = view
    x, y = points[..., 0], points[..., 1]
    return np.stack([(cos_a * x - sin_a * y) * zoom + tx, (sin_a * x + cos_a * y) * zoom + ty], axis=-1)


def on_screen(polygons: np.ndarray) -> np.ndarray:
    """[N, V, 2] canvas polygons -> bool [N]: those that can touch a visible pixel."""
    xs, ys = polygons[..., 0], polygons[..., 1]
    return (
        (xs.max(1) >= -CULL_MARGIN_PX)
        & (xs.min(1) <= WINDOW_W - 1 + CULL_MARGIN_PX)
        & (ys.max(1) >= -CULL_MARGIN_PX)
        & (ys.min(1) <= WINDOW_H - 1 + CULL_MARGIN_PX)
    )


def car_polygons(env) -> list[list[tuple[float, float]]]:
    """The world vertices of every fixture car.draw paints (wheels and hull; the wheel stripes lie inside)."""
    return [
        [tuple(fixture.body.transform * vertex) for vertex in fixture.shape.vertices]
        for body in env.car.drawlist
        for fixture in body.fixtures
    ]


def shrink(canvas: pygame.Surface) -> np.ndarray:
    """The canvas flipped and shrunk as the env shrinks its frame -> [96, 96, 3] class shares in 0..255."""
    flipped = pygame.transform.flip(canvas, False, True)
    small = pygame.transform.smoothscale(flipped, (STATE_W, STATE_H))
    return np.transpose(pygame.surfarray.array3d(small), (1, 0, 2)).astype(np.int32)  # [H, W, 3]


class TrackLabels:
    """Draws the class shares of the env's current view (one per replayed episode: its track is fixed)."""

    def __init__(self, env):
        self.env = env
        road = [(np.array(vertices, dtype=np.float64), tuple(color)) for vertices, color in env.road_poly]
        self.tiles = np.stack([vertices for vertices, _ in road]).reshape(-1, TILE_VERTICES, 2)  # [N, 4, 2]
        self.is_kerb = np.array([tuple(int(c) for c in color) in KERB_COLOURS for _, color in road])  # [N]
        self.world = pygame.Surface((WINDOW_W, WINDOW_H))  # channels: road, grass, kerb
        self.car = pygame.Surface((WINDOW_W, WINDOW_H))  # channel 0: car
        self.dashboard = pygame.Surface((WINDOW_W, WINDOW_H))
        covered = pygame.Surface((WINDOW_W, WINDOW_H))
        covered.fill((ON, ON, ON))
        self.whole = shrink(covered)[..., 0]  # [H, W]: a pixel's share when one class covers all of it (253)

    def shares(self) -> np.ndarray:
        """[96, 96, 5]: the share of each stored pixel covered by nothing, road, grass, kerb, car, in units where a
        pixel covered whole is `whole` (smoothscale's rounding makes that 253, not 255)."""
        view = camera(self.env)
        world, car = self.world, self.car
        world.fill((0, 0, 0))
        car.fill((0, 0, 0))
        gfxdraw.filled_polygon(world, to_canvas(FIELD_POLYGON, view).tolist(), (0, ON, 0))
        tiles = to_canvas(self.tiles, view)  # [N, 4, 2]
        for polygon, kerb in zip(tiles[on_screen(tiles)].tolist(), self.is_kerb[on_screen(tiles)]):
            gfxdraw.filled_polygon(world, polygon, (0, 0, ON) if kerb else (ON, 0, 0))
        for polygon in car_polygons(self.env):
            points = to_canvas(np.array(polygon), view).tolist()
            pygame.draw.polygon(world, (0, 0, 0), points)
            pygame.draw.polygon(car, (ON, 0, 0), points)
        world_shares, car_shares = shrink(world), shrink(car)
        dashboard = self.dashboard_mask()  # [H, W]
        classes = np.concatenate([world_shares, car_shares[..., :1]], axis=-1)  # [H, W, 4]
        classes[dashboard] = 0
        nothing = np.clip(self.whole[..., None] - classes.sum(-1, keepdims=True), 0, ON)  # [H, W, 1]
        return np.concatenate([nothing, classes], axis=-1)  # [H, W, 5]

    def dashboard_mask(self) -> np.ndarray:
        """bool [96, 96]: the stored pixels the dashboard paints over (the bar, indicators sticking out of it)."""
        painted = self.dashboard
        painted.fill((0, 0, 0))
        surf, self.env.surf = self.env.surf, painted
        try:
            self.env._render_indicators(WINDOW_W, WINDOW_H)
        finally:
            self.env.surf = surf
        pixels = pygame.surfarray.pixels3d(painted)
        pixels[:, BAR_TOP:] = ON  # the bar itself is black: mark it
        del pixels
        small = pygame.transform.smoothscale(painted, (STATE_W, STATE_H))
        return np.transpose(pygame.surfarray.array3d(small), (1, 0, 2)).max(-1) > 0


def palette(env) -> tuple[np.ndarray, list[set[str]]]:
    """The colours the env paints [K, 3] and, for each, the classes a pixel of that colour can belong to."""
    road = [tuple(int(c) for c in env.road_color + shade) for shade in TILE_SHADES]
    entries = [(colour, {"road"}) for colour in road]
    entries += [(tuple(int(c) for c in env.bg_color), {"grass"}), (tuple(int(c) for c in env.grass_color), {"grass"})]
    entries += [(colour, {"kerb"}) for colour in (*KERB_COLOURS, KERB_PINK)]
    entries += [(HULL_COLOUR, {"car"}), (WHEEL_WHITE, {"car"}), (WHEEL_COLOR, {"car", NOTHING})]
    return np.array([colour for colour, _ in entries], dtype=np.int32), [classes for _, classes in entries]


@EXTRACTORS.register("carracing")
class CarRacingObjects:
    source = "track-geometry"

    def __init__(self, env):
        self.env = env.unwrapped
        self.labels = TrackLabels(self.env)
        self.colours, self.colour_classes = palette(self.env)

    def __call__(self, frame: np.ndarray) -> FrameObjects:
        shares = self.labels.shares()  # [H, W, 5]
        label_map = shares.argmax(-1)  # [H, W]
        distances = ((frame[:, :, None, :].astype(np.int32) - self.colours) ** 2).sum(-1)  # [H, W, K]
        nearest = distances.argmin(-1)  # [H, W]
        objects, checks = [], {}
        pure_agreeing, pure_total = 0, 0
        for index, label in enumerate(LABELS, start=1):
            mask = label_map == index
            pure = shares[..., index] >= self.labels.whole  # [H, W]: pixels the class covers whole, no edge in them
            agrees = np.isin(nearest, [k for k, classes in enumerate(self.colour_classes) if label in classes])
            add_check(checks, f"agreement/{label}", (mask & agrees).sum(), mask.sum())
            add_check(checks, f"agreement whole pixels/{label}", (pure & agrees).sum(), pure.sum())
            pure_agreeing, pure_total = pure_agreeing + (pure & agrees).sum(), pure_total + pure.sum()
            if mask.any():
                objects.append(Found(label, mask))
        flagged = pure_agreeing < AGREEMENT_FLAG * pure_total
        add_check(checks, "flagged frames", int(flagged), 1)
        return FrameObjects(objects, checks, flagged)
