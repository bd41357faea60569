import numpy as np
import pytest

from core.errors import UserError
from envs import GAMES, get_game
from vlm import prompts


def test_unknown_game_names_the_choices():
    with pytest.raises(UserError, match="carracing, spaceinvaders"):
        get_game("pong")


def test_spaceinvaders_has_the_papers_six_actions():
    spec = get_game("spaceinvaders")
    assert spec.action_names == ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")
    assert [spec.codec.encode(np.int64(a)) for a in range(6)] == list(range(6))
    assert spec.n_stack == 4 and spec.env_id == "SpaceInvadersNoFrameskip-v4"


def test_carracing_codec_round_trips_every_code():
    codec = get_game("carracing").codec
    for code in range(len(codec.names)):
        assert codec.encode(codec.decode(code)) == code


def test_carracing_codec_snaps_to_the_nearest_grid_action():
    codec = get_game("carracing").codec
    action = codec.decode(codec.encode(np.array([-0.07, 0.035, 0.002])))
    np.testing.assert_allclose(action, [-0.06, 0.03, 0.0])
    assert codec.names[codec.encode(np.array([-0.07, 0.035, 0.002]))] == "slightleft_slow"
    # Out-of-range actions (a Gaussian policy's raw samples) are clipped to the action space first.
    np.testing.assert_allclose(codec.decode(codec.encode(np.array([3.0, 0.0, -2.0]))), [0.4, 0.0, 0.0])


@pytest.mark.parametrize("name", sorted(GAMES))
def test_action_words_are_distinct_plain_words_listed_in_the_instruction(name):
    spec = get_game(name)
    assert len(set(spec.action_names)) == len(spec.action_names)
    for word in spec.action_names:
        assert word.replace("_", "").isalnum()
        assert word in prompts.game_instruction(spec.objective, spec.tips, spec.action_names)
