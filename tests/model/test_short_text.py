"""The short-text path: encode_text computes only up to the longest text's end token, and gives
the same features as running all 77 positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clipsearch.model.testing import tiny_model

END = 49407


@pytest.fixture(scope="module")
def tokens(fixture_data: Path) -> torch.Tensor:
    return load_file(fixture_data / "parity" / "tokens.safetensors")["tokens"]


def _positions_seen(model, tokens: torch.Tensor, **kwargs) -> tuple[torch.Tensor, int]:
    seen: list[int] = []
    hook = model.transformer.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].shape[1])
    )
    try:
        with torch.inference_mode():
            out = model.encode_text(tokens, **kwargs)
    finally:
        hook.remove()
    return out, seen[0]


def test_short_batch_matches_full_77_positions(tokens: torch.Tensor) -> None:
    model = tiny_model(seed=3)
    short = tokens[[0, 1, 3, 5]]  # short captions, including the empty text
    trimmed, trimmed_len = _positions_seen(model, short)
    full, full_len = _positions_seen(model, short, trim=False)
    assert full_len == 77
    longest_end = int((short == END).float().argmax(dim=1).max())
    assert trimmed_len == longest_end + 1 < 20
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-6)


def test_every_fixture_text_matches_full_path_one_by_one_and_batched(tokens: torch.Tensor) -> None:
    model = tiny_model(seed=4)
    with torch.inference_mode():
        full = model.encode_text(tokens, trim=False)
        batched = model.encode_text(tokens)
        singles = torch.cat([model.encode_text(tokens[i : i + 1]) for i in range(len(tokens))])
    torch.testing.assert_close(batched, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(singles, full, rtol=1e-5, atol=1e-6)


def test_a_text_of_77_tokens_is_not_trimmed(tokens: torch.Tensor) -> None:
    longest = tokens[(tokens[:, -1] == END).nonzero()[0]]  # the truncated caption: end id last
    model = tiny_model(seed=5)
    _, seen = _positions_seen(model, longest)
    assert seen == 77


def test_ids_after_the_end_token_do_not_change_the_features(tokens: torch.Tensor) -> None:
    model = tiny_model(seed=6)
    text = tokens[:1].clone()
    end = int(text.argmax())
    noisy = text.clone()
    noisy[0, end + 1 :] = torch.randint(1, 40000, (77 - end - 1,))
    with torch.inference_mode():
        a = model.encode_text(text)
        b = model.encode_text(noisy, trim=False)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_given_fewer_than_77_columns_the_features_are_the_same(tokens: torch.Tensor) -> None:
    model = tiny_model(seed=7)
    with torch.inference_mode():
        full = model.encode_text(tokens[:3])
        cut = model.encode_text(tokens[:3, :20])
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False], ids=["text", "vit"])
def test_last_block_computed_only_where_read_gives_the_full_outputs(causal: bool) -> None:
    """The towers compute the last block at the single position they read (end token, class
    token); that must equal running every position and picking that one."""
    from clipsearch.model.clip import Transformer

    torch.manual_seed(0)
    tower = Transformer(width=64, layers=3, heads=4, causal=causal).eval()
    x = torch.randn(5, 11, 64)
    select = torch.tensor([0, 10, 3, 7, 1])
    with torch.inference_mode():
        full = tower(x)[torch.arange(5), select]
        picked = tower(x, select=select)
    torch.testing.assert_close(picked, full, rtol=1e-5, atol=1e-6)
