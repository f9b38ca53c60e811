import json

import numpy as np
import pytest

from servesim.workloads import video
from servesim.workloads.behaviour import synthetic
from servesim.workloads.drift import STREAM_SUFFIX, RecordedStream, StreamError, accuracy_by_condition, load_stream, save_stream


@pytest.fixture(scope="module")
def shipped():
    return load_stream(video.SHIPPED)


def _stream(n=300, rate=10.0, schedule=((0.0, 0), (12.0, 1), (20.0, 0)), replay="frames"):
    table = synthetic(n, [0.7, 0.9], persistence=0.5, n_classes=3, rng=np.random.default_rng(0))
    return RecordedStream(table, rate, schedule, ("clear", "dusk"), replay)


def test_a_request_meets_the_frame_on_screen_and_the_recording_loops():
    stream = _stream()
    np.testing.assert_array_equal(stream.draw_samples([0.0, 0.099, 0.1, 12.34, 29.9]), [0, 0, 1, 123, 299])
    np.testing.assert_array_equal(stream.draw_samples([30.0, 30.25]), [0, 2])  # 300 frames = 30 s, then again
    with pytest.raises(ValueError, match="finite and >= 0"):
        stream.draw_samples([-1.0])


def test_messages_take_their_scenes_rows_in_order_one_each():
    stream = _stream(replay="messages")  # scenes' rows: [0, 120), [120, 200), [200, 300)
    times = [0.0, 0.0, 0.0, 1.0, 12.5, 12.5, 25.0, 99.0]
    np.testing.assert_array_equal(stream.draw_samples(times), [0, 1, 2, 3, 120, 121, 200, 201])
    burst = stream.draw_samples(np.full(85, 13.0))  # more arrivals than the scene's 80 rows: they cycle
    np.testing.assert_array_equal(burst, 120 + np.arange(85) % 80)
    fit, live = stream.split_bootstrap(0.25)
    assert live.replay == "messages"
    np.testing.assert_array_equal(live.draw_samples([0.0, 9.0]), [0, 90])  # rows 30 and 120 of the original


def test_bootstrap_is_the_start_of_the_first_scene_and_the_live_stream_follows_it():
    stream = _stream()
    fit, live = stream.split_bootstrap(0.25)  # a quarter of the first 12 s = 3 s = 30 frames
    assert fit == stream.table.take(np.arange(30))
    assert live.table == stream.table.take(np.arange(30, 300))
    assert live.schedule == ((0.0, 0), (9.0, 1), (17.0, 0))  # its clock starts after the footage
    np.testing.assert_array_equal(live.draw_samples([0.0, 9.05]), [0, 90])  # frame 30 and 120 of the original
    with pytest.raises(ValueError, match="empty part"):
        stream.split_bootstrap(0.001)


def test_bad_streams_are_refused_with_the_field():
    table = synthetic(10, [0.7, 0.9], persistence=0.5, n_classes=3, rng=np.random.default_rng(0))
    with pytest.raises(StreamError, match="rate"):
        RecordedStream(table, 0.0, ((0.0, 0),), ("clear",))
    with pytest.raises(StreamError, match="start at 0"):
        RecordedStream(table, 10.0, ((1.0, 0),), ("clear",))
    with pytest.raises(StreamError, match="names none"):
        RecordedStream(table, 10.0, ((0.0, 2),), ("clear",))
    with pytest.raises(StreamError, match="replay must be one of"):
        RecordedStream(table, 10.0, ((0.0, 0),), ("clear",), "bytes")


def test_save_and_load_round_trip_and_a_bad_sidecar_names_its_file(tmp_path):
    stream = _stream()
    path = tmp_path / "cam.npz"
    save_stream(stream, path)
    back = load_stream(path)
    assert back.table == stream.table and back.rate == stream.rate
    assert back.schedule == stream.schedule and back.condition_names == stream.condition_names
    assert back.replay == "frames"
    sidecar = tmp_path / f"cam{STREAM_SUFFIX}"
    sidecar.write_text(json.dumps({"rate": 10, "replay": "frames", "conditions": ["clear"], "scenes": [[0, "fog"]]}))
    with pytest.raises(StreamError, match=f"{sidecar}.*not a recorded stream"):
        load_stream(path)
    sidecar.unlink()
    with pytest.raises(StreamError, match=f"{sidecar}: missing"):
        load_stream(path)


def test_render_shifts_by_at_most_a_pixel_with_zero_fill_and_stays_in_range():
    rng = np.random.default_rng(3)
    image = np.zeros((1, 8, 8))
    image[0, 3:5, 3:5] = 16.0
    frames = video.render(np.repeat(image, 400, axis=0), "clear", rng).reshape(-1, 8, 8)
    assert frames.min() >= 0 and frames.max() <= 16
    centres = np.array([np.unravel_index(np.argmax(f), f.shape) for f in frames])
    assert np.abs(centres - 3.5).max() <= 2  # the bright square moved at most a pixel
    dim = video.render(np.repeat(image, 400, axis=0), "dusk", rng)
    assert dim.reshape(-1, 8, 8)[:, 3:5, 3:5].mean() < 0.75 * frames[:, 3:5, 3:5].mean()
    with pytest.raises(ValueError, match="unknown condition 'fog'"):
        video.render(image, "fog", rng)


def test_shipped_recording_drifts_the_way_its_docstring_says(shipped):
    assert shipped.rate == video.FPS and shipped.table.n_samples == int(video.DURATION_S * video.FPS)
    assert shipped.table.exit_names == ("ramp1", "ramp2", "ramp3", "final")
    by = accuracy_by_condition(shipped)
    # Measured (docstring): clear .662/.829/.914/.945, dusk .430/.454/.612/.770,
    # glare .560/.624/.700/.747; each over thousands of frames.
    np.testing.assert_allclose(by["clear"], [0.662, 0.829, 0.914, 0.945], atol=6e-4)
    assert by["clear"][-1] > by["dusk"][-1] + 0.1 and by["clear"][-1] > by["glare"][-1] + 0.1
    for accuracy in by.values():
        assert accuracy[0] < accuracy[-1]
    # Frames of one shot are views of one digit: the final exit's answer mostly holds
    # from frame to frame within a clear scene, unlike rows drawn independently.
    final = shipped.table.prediction[: int(90 * video.FPS), -1]
    assert (final[1:] == final[:-1]).mean() > 0.8


def test_recording_again_reproduces_the_shipped_stream(tmp_path, shipped):
    out = tmp_path / "digits_video.npz"
    assert video.main(["--out", str(out)]) == 0
    fresh = load_stream(out)
    assert fresh.schedule == shipped.schedule
    np.testing.assert_array_equal(fresh.table.prediction, shipped.table.prediction)
    np.testing.assert_allclose(fresh.table.confidence, shipped.table.confidence, rtol=0, atol=1e-6)
