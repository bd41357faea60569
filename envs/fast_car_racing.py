"""A faster, pixel-identical drop-in for Gymnasium's ``CarRacing-v3``.

``FastCarRacing`` subclasses Gymnasium's ``CarRacing`` and replaces only the
rendering: physics, rewards, termination and infos are the inherited code.
Its observations (and ``render()`` frames) are bit-for-bit Gymnasium's; see
``envs/FAST_CAR_RACING.md`` for what makes it fast and why it is exact.

``FastFrameSkip`` is a drop-in for ``rl_zoo3.wrappers.FrameSkip`` that does not
draw the observations the frame skip throws away.
"""

from __future__ import annotations

import math
import threading

import gymnasium as gym
import numpy as np
import pygame
from gymnasium.envs.box2d.car_racing import (
    GRASS_DIM,
    MAX_SHAPE_DIM,
    PLAYFIELD,
    SCALE,
    STATE_H,
    STATE_W,
    VIDEO_H,
    VIDEO_W,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
    CarRacing,
)
from gymnasium.wrappers import (
    OrderEnforcing,
    PassiveEnvChecker,
    RecordEpisodeStatistics,
    TimeLimit,
)
from pygame import gfxdraw
from stable_baselines3.common.monitor import Monitor

FAST_CAR_RACING_ID = "CarRacingFast-v3"
BASE_CAR_RACING_ID = "CarRacing-v3"

# pygame.math.Vector2 snaps rotations within this epsilon of a multiple of 90°.
PYGAME_VECTOR_EPSILON = 1e-6
TWO_PI = 2 * math.pi
HALF_PI = math.pi / 2
# (cos, sin) that reproduce pygame's exact swaps for 0°, 90°, 180° and 270°.
QUARTER_TURNS = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))

# Gymnasium paints its black indicator bar over the bottom INDICATOR_BAR_H rows
# of the flipped frame (rows BAR_TOP and below), i.e. over the top
# INDICATOR_BAR_H rows of the unflipped canvas: whatever the world drawing
# leaves there is never seen.
INDICATOR_BAR_H = round(5 * WINDOW_H / 40.0)
BAR_TOP = WINDOW_H - INDICATOR_BAR_H
VISIBLE_CANVAS_RECT = (0, INDICATOR_BAR_H, WINDOW_W, BAR_TOP)
# Gymnasium's vertical indicators (speed, ABS) rise from INDICATOR_UNIT_H px
# above the bottom, INDICATOR_UNIT_H px per unit, and can stick out of the bar.
INDICATOR_UNIT_H = WINDOW_H / 40.0
# Rows of slack kept around rasterised bounds computed in floating point.
ROW_MARGIN = 2
# gfxdraw truncates vertices to integers and anti-aliased edges reach one pixel
# beyond them; a polygon whose float bounding box stays this far outside the
# visible rows and columns cannot change a visible pixel.
CULL_MARGIN_PX = 4
# While every vertex of the background quad is within this many pixels of the
# origin, SDL_gfx's fixed-point (16.16 int) scanline fill cannot overflow.
SAFE_FILL_COORD = 16000
REWARD_FONT_SIZE = 42
REWARD_TEXT_CENTER = (60, WINDOW_H - WINDOW_H * 2.5 / 40.0)
TEXT_CACHE_MAX = 4096
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def _grass_polygons() -> np.ndarray:
    """Gymnasium's grass patches as a (400, 4, 2) array, same vertex order."""
    grass = []
    for x in range(-20, 20, 2):
        for y in range(-20, 20, 2):
            grass.append(
                [
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + 0),
                    (GRASS_DIM * x + 0, GRASS_DIM * y + GRASS_DIM),
                    (GRASS_DIM * x + GRASS_DIM, GRASS_DIM * y + GRASS_DIM),
                ]
            )
    return np.array(grass, dtype=np.float64)


GRASS_POLYGONS = _grass_polygons()
FIELD_POLYGON = np.array(
    [
        (PLAYFIELD, PLAYFIELD),
        (PLAYFIELD, -PLAYFIELD),
        (-PLAYFIELD, -PLAYFIELD),
        (-PLAYFIELD, PLAYFIELD),
    ],
    dtype=np.float64,
)


def _pygame_rotation(angle: float) -> tuple[float, float]:
    """(cos, sin) such that ``cos*x - sin*y, sin*x + cos*y`` equals
    ``pygame.math.Vector2((x, y)).rotate_rad(angle)`` bit for bit.

    pygame reduces the angle with fmod to [0, 2π) and special-cases angles
    within its epsilon of a multiple of 90° as exact coordinate swaps; with
    cos/sin in {0, ±1} the formula gives the same numbers (up to the sign of a
    zero, which the following ``* zoom + translation`` erases).
    """
    angle = math.fmod(angle, TWO_PI)
    if angle < 0:
        angle += TWO_PI
    if math.fmod(angle + PYGAME_VECTOR_EPSILON, HALF_PI) < 2 * PYGAME_VECTOR_EPSILON:
        return QUARTER_TURNS[int((angle + PYGAME_VECTOR_EPSILON) / HALF_PI) % 4]
    return math.cos(angle), math.sin(angle)


def _encloses_screen(quad: list[tuple[float, float]]) -> bool:
    """Whether gfxdraw's ``aapolygon`` + ``filled_polygon`` of ``quad`` paint
    every pixel of the screen in its colour, and nothing else on screen.

    True when the integer vertices (gfxdraw truncates) are small enough for
    overflow-free fixed-point scanlines and the screen, enlarged by
    CULL_MARGIN_PX, lies strictly inside the convex quad: every row's span
    then covers the whole width and the anti-aliased edges stay off-screen.
    """
    vertices = [(int(x), int(y)) for x, y in quad]
    if any(abs(c) > SAFE_FILL_COORD for vertex in vertices for c in vertex):
        return False
    lo_x, lo_y = -CULL_MARGIN_PX, -CULL_MARGIN_PX
    hi_x, hi_y = WINDOW_W - 1 + CULL_MARGIN_PX, WINDOW_H - 1 + CULL_MARGIN_PX
    corners = ((lo_x, lo_y), (hi_x, lo_y), (hi_x, hi_y), (lo_x, hi_y))
    sides = set()
    for (ax, ay), (bx, by) in zip(vertices, vertices[1:] + vertices[:1]):
        for cx, cy in corners:
            cross = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
            if cross == 0:
                return False
            sides.add(cross > 0)
    return len(sides) == 1


class _RenderBuffers:
    """Scratch surfaces and text cache, shared by every env of a thread.

    Nothing carries over from one frame to the next: each frame overwrites
    every pixel it later reads. Sharing keeps one set of buffers in cache when
    several envs are stepped in turn (as a DummyVecEnv does); per-thread
    because pygame drawing releases the GIL.
    """

    def __init__(self):
        # The world is drawn unflipped on the canvas; the frame only ever
        # holds the flipped bottom rows that the indicators and reward cover.
        self.canvas = pygame.Surface((WINDOW_W, WINDOW_H))
        self.frame = pygame.Surface((WINDOW_W, WINDOW_H))
        self._shrunk: dict[tuple[int, int], tuple[pygame.Surface, ...]] = {}
        self._font: pygame.font.Font | None = None
        self._text: dict[str, pygame.Surface] = {}

    def shrunk(self, size: tuple[int, int]) -> tuple[pygame.Surface, ...]:
        """For an output ``size``: the canvas rows shrunk in width, the whole
        flipped frame shrunk in width, and the final image."""
        if size not in self._shrunk:
            width, _ = size
            self._shrunk[size] = (
                pygame.Surface((width, BAR_TOP)),
                pygame.Surface((width, WINDOW_H)),
                pygame.Surface(size),
            )
        return self._shrunk[size]

    def reward_text(self, text: str) -> pygame.Surface:
        # Gymnasium builds a new Font every frame; a reused Font renders the
        # same pixels, and a rendered string never changes.
        surface = self._text.get(text)
        if surface is None:
            if self._font is None or not pygame.font.get_init():
                pygame.font.init()
                self._font = pygame.font.Font(pygame.font.get_default_font(), REWARD_FONT_SIZE)
            if len(self._text) >= TEXT_CACHE_MAX:
                self._text.clear()
            surface = self._font.render(text, True, WHITE, BLACK)
            self._text[text] = surface
        return surface


_thread_buffers = threading.local()


def _render_buffers() -> _RenderBuffers:
    if not hasattr(_thread_buffers, "buffers"):
        _thread_buffers.buffers = _RenderBuffers()
    return _thread_buffers.buffers


class FastCarRacing(CarRacing):
    """Gymnasium's CarRacing with a faster, pixel-identical renderer.

    Set ``render_state_pixels = False`` before a ``step`` to skip drawing its
    observation: that step then returns a copy of the previous observation.
    ``FastFrameSkip`` does this for the frames it discards; ``observe()``
    draws the observation of the current state on demand.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.render_state_pixels = True
        self._set_polygons(GRASS_POLYGONS)

    def _set_polygons(self, polygons: np.ndarray):
        """Store (n, 4, 2) world polygons with their bounding circles."""
        self._poly_x = polygons[:, :, 0]
        self._poly_y = polygons[:, :, 1]
        self._poly_cx = self._poly_x.mean(axis=1)
        self._poly_cy = self._poly_y.mean(axis=1)
        self._poly_radius = np.hypot(self._poly_x - self._poly_cx[:, None], self._poly_y - self._poly_cy[:, None]).max(
            axis=1
        )

    def _create_track(self):
        success = super()._create_track()
        if success:
            road = np.array([poly for poly, _ in self.road_poly], dtype=np.float64)
            # Grass first, then road: Gymnasium's drawing order.
            self._set_polygons(np.concatenate([GRASS_POLYGONS, road]))
        return success

    def observe(self) -> np.ndarray:
        """Draw and return the state-pixel observation of the current state."""
        self.state = self._render("state_pixels")
        return self.state

    def _render(self, mode: str):
        if mode == "human" or "t" not in self.__dict__:
            return super()._render(mode)
        assert mode in self.metadata["render_modes"]
        if mode == "state_pixels" and not self.render_state_pixels:
            # A copy: PassiveEnvChecker warns about observations that share
            # memory across steps.
            return self.state.copy()
        assert self.car is not None

        angle = -self.car.hull.angle
        zoom = 0.1 * SCALE * max(1 - self.t, 0) + ZOOM * SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (WINDOW_W / 2 + trans[0], WINDOW_H / 4 + trans[1])

        buffers = _render_buffers()
        self._draw_world(buffers.canvas, zoom, trans, angle)
        self.car.draw(buffers.canvas, zoom, trans, angle, mode != "state_pixels")
        if mode == "rgb_array":
            return self._finish_frame(buffers, (VIDEO_W, VIDEO_H))
        return self._finish_frame(buffers, (STATE_W, STATE_H))

    def _draw_world(self, canvas, zoom, trans, angle):
        """Background, grass and road, as ``CarRacing._render_road`` draws them.

        Vertices are transformed with numpy using the same float operations,
        in the same order, as Gymnasium's per-vertex ``Vector2.rotate_rad`` and
        ``* zoom + translation``, so the polygons that are drawn get exactly
        the coordinates Gymnasium passes to gfxdraw.
        """
        cos_a, sin_a = _pygame_rotation(angle)
        tx, ty = trans

        field_x, field_y = FIELD_POLYGON[:, 0], FIELD_POLYGON[:, 1]
        fx = (cos_a * field_x - sin_a * field_y) * zoom + tx
        fy = (sin_a * field_x + cos_a * field_y) * zoom + ty
        field = list(zip(fx.tolist(), fy.tolist()))
        covers_screen = _encloses_screen(field)
        if covers_screen:
            # The background polygon then just fills the screen. gfxdraw
            # converts the (possibly float) colour: let it paint one pixel in
            # the hidden rows and fill with that pixel's value.
            gfxdraw.pixel(canvas, 0, 0, self.bg_color)
        # Fill with numpy: Surface.fill uses non-temporal stores, which leave
        # the canvas out of cache and make the drawing below twice as slow.
        canvas_px = pygame.surfarray.pixels2d(canvas)
        # Otherwise start from black, like Gymnasium's fresh surface.
        canvas_px[:, INDICATOR_BAR_H:] = canvas_px[0, 0] if covers_screen else 0
        del canvas_px
        if not covers_screen:
            gfxdraw.aapolygon(canvas, field, self.bg_color)
            gfxdraw.filled_polygon(canvas, field, self.bg_color)

        # A cheap pre-cull on bounding circles, then exact tests on the few
        # candidates.
        cx = (cos_a * self._poly_cx - sin_a * self._poly_cy) * zoom + tx
        cy = (sin_a * self._poly_cx + cos_a * self._poly_cy) * zoom + ty
        reach = self._poly_radius * zoom + 1.0
        candidates = np.flatnonzero(
            (cx + reach >= -CULL_MARGIN_PX)
            & (cx - reach <= WINDOW_W - 1 + CULL_MARGIN_PX)
            & (cy + reach >= INDICATOR_BAR_H - CULL_MARGIN_PX)
            & (cy - reach <= WINDOW_H - 1 + CULL_MARGIN_PX)
        )
        px, py = self._poly_x[candidates], self._poly_y[candidates]
        xs = (cos_a * px - sin_a * py) * zoom + tx
        ys = (sin_a * px + cos_a * py) * zoom + ty
        # Gymnasium's own cull: a polygon is drawn if any vertex lies in the
        # screen enlarged by MAX_SHAPE_DIM ...
        near = (
            (xs >= -MAX_SHAPE_DIM)
            & (xs <= WINDOW_W + MAX_SHAPE_DIM)
            & (ys >= -MAX_SHAPE_DIM)
            & (ys <= WINDOW_H + MAX_SHAPE_DIM)
        ).any(axis=1)
        # ... and ours: skip those that cannot touch a visible pixel.
        visible = (
            (xs.max(axis=1) >= -CULL_MARGIN_PX)
            & (xs.min(axis=1) <= WINDOW_W - 1 + CULL_MARGIN_PX)
            & (ys.max(axis=1) >= INDICATOR_BAR_H - CULL_MARGIN_PX)
            & (ys.min(axis=1) <= WINDOW_H - 1 + CULL_MARGIN_PX)
        )
        keep = near & visible
        points = np.stack([xs[keep], ys[keep]], axis=-1).tolist()
        n_grass = len(GRASS_POLYGONS)
        for i, poly in zip(candidates[keep].tolist(), points):
            # Read now: tile colours change in place when the car
            # touches a tile.
            color = self.grass_color if i < n_grass else [int(c) for c in self.road_poly[i - n_grass][1]]
            gfxdraw.aapolygon(canvas, poly, color)
            gfxdraw.filled_polygon(canvas, poly, color)

    def _finish_frame(self, buffers: _RenderBuffers, size: tuple[int, int]) -> np.ndarray:
        """Gymnasium's flip, indicators, reward text and ``smoothscale`` to
        ``size``, without flipping the full-size world.

        ``smoothscale`` shrinks rows first (each row on its own) into an 8-bit
        buffer, then columns; running the two passes as two calls gives the
        same bytes. So the flipped frame's rows are shrunk in width straight
        from the canvas, except for the bottom strip the overlays paint over,
        which is flipped, painted and shrunk at full size; then the strips are
        stacked (flipped) and shrunk in height.
        """
        width = size[0]
        canvas, frame = buffers.canvas, buffers.frame
        world_rows, stacked, result = buffers.shrunk(size)
        text = buffers.reward_text(f"{self.reward:04.0f}")
        text_rect = text.get_rect()
        text_rect.center = REWARD_TEXT_CENTER
        top = min(self._indicators_top(), text_rect.top - ROW_MARGIN)

        # Frame rows [top, BAR_TOP) are the flipped canvas; the bar paints
        # over everything below.
        canvas_px = pygame.surfarray.pixels2d(canvas)
        frame_px = pygame.surfarray.pixels2d(frame)
        frame_px[:, top:BAR_TOP] = canvas_px[:, ::-1][:, top:BAR_TOP]
        del canvas_px, frame_px  # unlock the surfaces for the blits below
        self.surf = frame
        self._render_indicators(WINDOW_W, WINDOW_H)
        self.surf.blit(text, text_rect)

        pygame.transform.smoothscale(canvas.subsurface(VISIBLE_CANVAS_RECT), (width, BAR_TOP), world_rows)
        strip = (0, top, width, WINDOW_H - top)
        pygame.transform.smoothscale(
            frame.subsurface((0, top, WINDOW_W, WINDOW_H - top)),
            (width, WINDOW_H - top),
            stacked.subsurface(strip),
        )
        world_px = pygame.surfarray.pixels2d(world_rows)
        stacked_px = pygame.surfarray.pixels2d(stacked)
        stacked_px[:, :top] = world_px[:, ::-1][:, :top]
        del world_px, stacked_px
        pygame.transform.smoothscale(stacked, size, result)
        return np.transpose(np.array(pygame.surfarray.pixels3d(result)), axes=(1, 0, 2))

    def _indicators_top(self) -> int:
        """A frame row at or above everything ``_render_indicators`` paints:
        the bar's top, or higher where a vertical indicator sticks out of it.

        Mirrors the bar heights of ``CarRacing._render_indicators``
        (0.02 * speed, 0.01 * wheel omega), with a margin.
        """
        car = self.car
        vx, vy = car.hull.linearVelocity
        tallest = max(
            0.02 * math.sqrt(vx * vx + vy * vy),
            *(0.01 * wheel.omega for wheel in car.wheels),
        )
        indicator_top = WINDOW_H - INDICATOR_UNIT_H * (1 + tallest)
        return max(0, min(BAR_TOP, math.floor(indicator_top) - ROW_MARGIN))


class FastFrameSkip(gym.Wrapper):
    """``rl_zoo3.wrappers.FrameSkip`` that does not draw skipped frames.

    Same semantics: repeat the action ``skip`` times, sum the rewards, stop
    early on termination/truncation, return the last observation and info.
    Every frame still runs the physics and reward code; only the observations
    that would be thrown away are never drawn. The wrappers between this one
    and the ``FastCarRacing`` must leave observations untouched.
    """

    OBSERVATION_PRESERVING = (
        Monitor,
        TimeLimit,
        OrderEnforcing,
        PassiveEnvChecker,
        RecordEpisodeStatistics,
    )

    def __init__(self, env: gym.Env, skip: int = 4):
        super().__init__(env)
        if not isinstance(env.unwrapped, FastCarRacing):
            raise TypeError(f"FastFrameSkip needs a FastCarRacing, got {env.unwrapped}")
        inner = env
        while inner is not env.unwrapped:
            if not isinstance(inner, self.OBSERVATION_PRESERVING):
                raise TypeError(f"FastFrameSkip cannot wrap {type(inner).__name__}: it may change observations")
            inner = inner.env
        self._skip = skip

    def step(self, action):
        base = self.env.unwrapped
        total_reward = 0.0
        for i in range(self._skip):
            drawn = i == self._skip - 1
            base.render_state_pixels = drawn
            try:
                obs, reward, terminated, truncated, info = self.env.step(action)
            finally:
                base.render_state_pixels = True
            total_reward += float(reward)
            if terminated or truncated:
                break
        if not drawn:
            obs = base.observe()
        return obs, total_reward, terminated, truncated, info


def register_fast_car_racing() -> None:
    """Register ``CarRacingFast-v3`` with CarRacing-v3's settings (idempotent)."""
    if FAST_CAR_RACING_ID in gym.registry:
        return
    base = gym.spec(BASE_CAR_RACING_ID)
    gym.register(
        id=FAST_CAR_RACING_ID,
        entry_point=f"{__name__}:FastCarRacing",
        max_episode_steps=base.max_episode_steps,
        reward_threshold=base.reward_threshold,
        kwargs=dict(base.kwargs),
    )
