"""End to end: BadNets backdoors a CSQ victim on the synthetic data, and jpeg is evaluated."""

from conftest import benchmark_text


def test_badnets_lifts_t_map_far_above_clean_model(run_benchmark, tmp_path):
    text = benchmark_text(
        tmp_path / "results",
        attacks='[[attack]]\nname = "badnets"\npoison_rate = 0.1',
        defenses='[[defense]]\nname = "jpeg"\nquality = 50',
    )
    result, frame = run_benchmark(text)
    assert not result.failures
    row = frame[(frame.attack == "badnets") & (frame.defense == "none")].iloc[0]
    assert row.t_map > row.t_map_clean_model + 0.3
    assert row.t_map > row.t_map_untriggered + 0.3
    assert row.poison_count == 100
    clean = frame[frame.attack == "(clean)"].iloc[0]
    assert 0.15 < clean.clean_map < 1.0
    assert set(frame.defense) == {"none", "jpeg"}
