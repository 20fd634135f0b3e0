"""Decoding: frame counting and sampling, audio resampling, images, and every kind of bad input.

Generated clips (vinci_edge.media.synth) carry their frame number in the picture, so the tests check
that the frame kept for index k really is the k-th frame. Debian sample media, when installed, add
real-world files: an H.264 MP4 whose edit list hides a frame its header counts, the same movie as an
Ogg full of zero-length packets, an AVI with a damaged audio packet, an AVI without audio, a speech
WAV.
"""

from __future__ import annotations

import subprocess
import sys
import wave
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, features

from vinci_edge.errors import MediaError
from vinci_edge.media import (
    NO_AUDIO_WARNING,
    decode_audio,
    decode_image,
    decode_video,
    make_test_clip,
    make_test_wav,
    pattern_frame,
    probe,
    read_frame_number,
)
from vinci_edge.timeline import sample_frame_indices

MOVIE_HELLO = Path("/usr/share/forensics-samples/original-files/movie2/movie-hello.mp4")
MOVIE_HELLO_OGG = MOVIE_HELLO.with_suffix(".ogg")
MEGAMIND = Path("/usr/share/doc/opencv-doc/examples/data/Megamind.avi")
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
FRONT_CENTER = Path("/usr/share/sounds/alsa/Front_Center.wav")


def needs(path: Path):
    return pytest.mark.skipif(
        not path.exists(), reason=f"Debian sample media {path} not installed (apt-get install its package)"
    )


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * sample_rate / samples.size)


def independent_decode(path: Path, indices: set[int]) -> tuple[list[float], dict[int, np.ndarray]]:
    """Plain PyAV, no threads, no tricks: every frame's time, and RGB of the frames at `indices`."""
    times: list[float] = []
    rgb: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            times.append(frame.time)
            if k in indices:
                rgb[k] = frame.to_ndarray(format="rgb24")
    return times, rgb


@pytest.fixture(scope="module")
def pattern_clip(tmp_path_factory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=4.0, fps=10)


# --------------------------------------------------------------------------------------------------
# Generated clips


def test_clip_decodes_to_the_sampled_frames_and_the_tone(pattern_clip):
    video = decode_video(pattern_clip, 8)

    assert video.warnings == []
    assert video.n_source_frames == 40
    assert video.fps == 10.0
    assert video.expected_frame_count == 8
    np.testing.assert_array_equal(video.frame_indices, sample_frame_indices(40, 8))
    assert video.frame_indices.dtype == np.int64
    # Each kept frame is the frame of that index: its picture carries the number.
    assert [read_frame_number(f) for f in video.frames] == video.frame_indices.tolist()
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in video.frames)

    audio = video.audio
    assert audio is not None and audio.sample_rate == 16000
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # AAC rounds the track up to whole 1024-sample frames: 4.0 s of tone decodes to 4.032 s.
    assert 4.0 <= audio.duration <= 4.07
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(440, abs=2)


def test_frames_match_the_picture_they_were_made_from(pattern_clip):
    video = decode_video(pattern_clip, 4, load_audio=False)
    for index, frame in zip(video.frame_indices, video.frames):
        expected = pattern_frame(int(index), 40, 160, 120).astype(np.int16)
        # Lossy H.264 at crf 18: close to the source everywhere, not bit-exact.
        assert np.abs(frame.astype(np.int16) - expected).mean() < 4


def test_more_frames_than_the_clip_has_repeats_frames(tmp_path):
    path = make_test_clip(tmp_path / "short.mp4", seconds=0.5, fps=10, audio=False)
    video = decode_video(path, 8)

    expected = sample_frame_indices(5, 8)  # [0 1 1 2 2 3 3 4]
    np.testing.assert_array_equal(video.frame_indices, expected)
    assert len(video.frames) == 8
    assert [read_frame_number(f) for f in video.frames] == expected.tolist()
    np.testing.assert_array_equal(video.frames[1], video.frames[2])
    # Repeats are copies: changing one frame must not change its twin.
    video.frames[1][:] = 0
    assert video.frames[2].any()


def test_dense_sampling_keeps_every_frame_in_order(pattern_clip):
    video = decode_video(pattern_clip, 40, load_audio=False)
    assert video.frame_indices.tolist() == list(range(40))
    assert [read_frame_number(f) for f in video.frames] == list(range(40))


def test_frame_times_match_the_stream_timestamps(tmp_path):
    path = make_test_clip(tmp_path / "c25.mp4", seconds=2.0, fps=25, size=(320, 240), audio=False)
    video = decode_video(path, 7)
    times, _ = independent_decode(path, set())

    assert video.fps == 25.0 and video.n_source_frames == len(times) == 50
    np.testing.assert_allclose(
        video.frame_times, np.asarray(times)[video.frame_indices] - times[0], atol=1e-6
    )
    assert video.duration == pytest.approx(2.0)


def test_stereo_audio_at_another_rate_is_downmixed_and_resampled(tmp_path):
    path = make_test_clip(
        tmp_path / "stereo.mp4", seconds=2.0, fps=10, sample_rate=22050, channels=2, tone_hz=1000.0
    )
    assert probe(path)["channels"] == 2
    audio = decode_video(path, 2).audio
    assert audio is not None and audio.sample_rate == 16000
    assert 2.0 <= audio.duration <= 2.1
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(1000, abs=2)
    # Both channels carry the same tone, so their average keeps its level (peak 0.3); FFmpeg's own
    # float downmix would give 0.707 * (L + R), peak 0.42.
    assert 0.28 < np.abs(audio.samples).max() < 0.32


def test_a_packet_count_that_disagrees_with_decoding_is_corrected(pattern_clip, monkeypatch):
    # Simulate a container whose packets do not map one-to-one to frames (packed B-frames in AVI):
    # the count pass sees 45 packets without usable timestamps, the real stream has 40 frames.
    from vinci_edge.media import decode

    monkeypatch.setattr(decode, "_count_video_frames", lambda c, s: decode._FrameCount(45, None))
    video = decode_video(pattern_clip, 8, load_audio=False)

    assert video.n_source_frames == 40
    np.testing.assert_array_equal(video.frame_indices, sample_frame_indices(40, 8))
    assert [read_frame_number(f) for f in video.frames] == video.frame_indices.tolist()
    assert video.warnings == [
        "the video stream has 45 packets but 40 frames decoded: sampling over the 40 decoded frames"
    ]


def test_a_video_without_audio_falls_back_to_frames_only(tmp_path):
    path = make_test_clip(tmp_path / "silent.mp4", seconds=1.0, audio=False)
    video = decode_video(path, 4)
    assert video.audio is None
    assert video.warnings == [NO_AUDIO_WARNING]
    assert len(video.frames) == 4

    not_asked = decode_video(path, 4, load_audio=False)
    assert not_asked.audio is None and not_asked.warnings == []


def test_decode_audio_reads_the_audio_track_of_a_video(pattern_clip):
    audio = decode_audio(pattern_clip, sample_rate=8000)
    assert audio.sample_rate == 8000
    assert 4.0 <= audio.duration <= 4.07
    assert dominant_frequency(audio.samples, 8000) == pytest.approx(440, abs=2)


def test_generated_clips_are_deterministic(tmp_path):
    a = make_test_clip(tmp_path / "a.mp4", seconds=1.0)
    b = make_test_clip(tmp_path / "b.mp4", seconds=1.0)
    assert a.read_bytes() == b.read_bytes()


def test_probe_summarises_streams(pattern_clip):
    info = probe(pattern_clip)
    assert info["has_video"] and info["has_audio"]
    assert info["fps"] == 10.0 and info["n_frames"] == 40
    assert info["width"] == 160 and info["height"] == 120
    assert info["video_codec"] in ("h264", "mpeg4") and info["audio_codec"] == "aac"
    assert info["sample_rate"] == 16000 and info["channels"] == 1
    assert info["duration"] == pytest.approx(4.0, abs=0.05)


# --------------------------------------------------------------------------------------------------
# Audio files


def test_wav_decodes_sample_exact(tmp_path):
    path = make_test_wav(tmp_path / "tone.wav", seconds=1.5, sample_rate=16000, tone_hz=300.0)
    audio = decode_audio(path)
    assert audio.samples.shape == (24000,) and audio.warnings == []
    t = np.arange(24000) / 16000
    tone = 0.3 * (0.75 + 0.25 * np.sin(np.pi * t)) * np.sin(2 * np.pi * 300.0 * t)
    np.testing.assert_allclose(audio.samples, tone, atol=1 / 32767)  # 16-bit quantisation only


def test_wav_is_resampled(tmp_path):
    path = make_test_wav(tmp_path / "tone44.wav", seconds=2.0, sample_rate=44100, tone_hz=440.0)
    audio = decode_audio(path, sample_rate=16000)
    assert abs(audio.samples.size - 32000) <= 16
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(440, abs=1)


@pytest.mark.parametrize(
    ("suffix", "codec", "lossless"), [(".flac", "flac", True), (".mp3", "libmp3lame", False)]
)
def test_compressed_audio_files(tmp_path, suffix, codec, lossless):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    t = np.arange(32000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    path = tmp_path / f"tone{suffix}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=16000)
        stream.layout = "mono"
        fmt = stream.codec_context.codec.audio_formats[0].name  # flac: s16, lame: s32p
        pcm = np.round(tone.astype(np.float64) * 32767).astype(np.int16)
        data = pcm if fmt.startswith("s16") else pcm.astype(np.int32) << 16
        frame = av.AudioFrame.from_ndarray(data[None], format=fmt, layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    audio = decode_audio(path)
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(500, abs=1)
    if lossless:
        np.testing.assert_array_equal(audio.samples, pcm / np.float32(32768))
    else:
        assert abs(audio.duration - 2.0) < 0.1  # mp3 adds encoder delay / padding


# --------------------------------------------------------------------------------------------------
# Bad input: a MediaError that names the file and says what to do


def raises_media_error(match: str):
    return pytest.raises(MediaError, match=match)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    for decode in (lambda p: decode_video(p, 8), decode_audio, decode_image, probe):
        with raises_media_error("not found") as info:
            decode(missing)
        assert str(missing) in info.value.message and info.value.hint


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are my notes, not a video\n" * 20)
    with raises_media_error("not a media file") as info:
        decode_video(path, 8)
    assert info.value.hint
    with raises_media_error("not a media file"):
        decode_audio(path)


def test_empty_file_and_folder(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with raises_media_error("empty"):
        decode_video(empty, 8)
    with raises_media_error("not a file"):
        decode_audio(tmp_path)


def test_truncated_mp4_with_index_at_the_end(pattern_clip, tmp_path):
    # PyAV writes the moov atom after the media data: cut, the file has no index at all.
    cut = tmp_path / "cut.mp4"
    data = pattern_clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with raises_media_error("not a media file") as info:
        decode_video(cut, 8)
    assert "truncated" in info.value.hint


def test_audio_file_asked_as_video(tmp_path):
    path = make_test_wav(tmp_path / "speech.wav", seconds=0.5)
    with raises_media_error("no video stream") as info:
        decode_video(path, 8)
    assert "audio" in info.value.hint


def test_cover_art_is_not_a_video(tmp_path):
    if "libmp3lame" not in av.codecs_available:
        pytest.skip("this PyAV build has no mp3 encoder")
    # An mp3 with an embedded cover picture: FFmpeg shows the picture as a one-frame video stream.
    path = tmp_path / "song.mp3"
    with av.open(str(path), "w") as out:
        sound = out.add_stream("libmp3lame", rate=16000)
        sound.layout = "mono"
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(pattern_frame(0, 1, 64, 64), format="rgb24")
        out.mux(cover.encode(picture.reformat(format="yuvj420p")))
        out.mux(cover.encode(None))
        tone = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 0.3 * 2**31).astype(np.int32)
        frame = av.AudioFrame.from_ndarray(tone[None], format="s32p", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1  # the cover, as FFmpeg sees it

    assert not probe(path)["has_video"]
    with raises_media_error("no video stream"):
        decode_video(path, 8)
    assert decode_audio(path).duration == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".gif"])
def test_a_still_image_is_not_a_video(tmp_path, suffix):
    if suffix == ".webp" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    # FFmpeg reads a picture as a one-frame stream; sampled, it became copies of one frame at t = 0.
    path = tmp_path / f"picture{suffix}"
    Image.fromarray(pattern_frame(0, 1, 96, 64)).save(path)
    with raises_media_error("is an image") as info:
        decode_video(path, 4)
    assert str(path) in info.value.message
    assert "--image" in info.value.hint and "image=" in info.value.hint
    assert decode_image(path).shape == (64, 96, 3)  # the way the hint points to works


def test_one_frame_videos_and_animations_are_videos(tmp_path):
    # What a file is comes from its container: a one-frame clip in a video container is a video,
    # even with a picture codec (PNG or MJPEG in a .mov); an animated GIF is a moving picture.
    clips = [make_test_clip(tmp_path / "one.mp4", seconds=0.1, fps=10, audio=False)]
    for codec, pix_fmt in (("png", "rgb24"), ("mjpeg", "yuvj420p")):
        clips.append(tmp_path / f"one_{codec}.mov")
        with av.open(str(clips[-1]), "w") as out:
            stream = out.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = 160, 120, pix_fmt
            frame = av.VideoFrame.from_ndarray(pattern_frame(0, 1, 160, 120), format="rgb24")
            frame.pts = 0
            out.mux(stream.encode(frame.reformat(format=pix_fmt)))
            out.mux(stream.encode(None))
    for path in clips:
        video = decode_video(path, 4, load_audio=False)
        assert video.n_source_frames == 1 and video.frame_indices.tolist() == [0, 0, 0, 0]
        assert [read_frame_number(f) for f in video.frames] == [0, 0, 0, 0]

    gif = tmp_path / "moving.gif"
    pictures = [Image.fromarray(pattern_frame(k, 3, 96, 64)) for k in range(3)]
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=100)
    assert decode_video(gif, 3, load_audio=False).n_source_frames == 3


def test_video_without_audio_asked_as_audio(tmp_path):
    path = make_test_clip(tmp_path / "silent.mp4", seconds=0.5, audio=False)
    with raises_media_error("no audio"):
        decode_audio(path)


def test_wav_with_no_samples(tmp_path):
    path = tmp_path / "zero.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"")
    with raises_media_error("empty"):
        decode_audio(path)


def test_unsupported_codec(tmp_path):
    # An AVI whose codec tag is patched to one FFmpeg does not know: opens, but cannot be decoded.
    path = tmp_path / "odd.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * k, np.uint8), format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = path.read_bytes()
    assert b"FMP4" in data
    path.write_bytes(data.replace(b"FMP4", b"ZZZZ"))

    assert probe(path)["has_video"] and probe(path)["video_codec"] is None
    with raises_media_error("not supported") as info:
        decode_video(path, 4)
    assert "re-encode" in info.value.hint


def test_bad_num_frames(pattern_clip):
    with pytest.raises(ValueError):
        decode_video(pattern_clip, 0)


# --------------------------------------------------------------------------------------------------
# Images


def test_decode_image_round_trip(tmp_path):
    rgb = pattern_frame(3, 10, 96, 64)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png"), rgb)

    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")  # single channel -> RGB
    gray = decode_image(tmp_path / "gray.png")
    assert gray.shape == (64, 96, 3)
    np.testing.assert_array_equal(gray[..., 2], rgb[..., 0])


def test_decode_image_bad_input(tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    with raises_media_error("not an image"):
        decode_image(tmp_path / "x.png")
    Image.fromarray(pattern_frame(1, 2, 96, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with raises_media_error("could not be decoded"):
        decode_image(tmp_path / "cut.jpg")


# --------------------------------------------------------------------------------------------------
# Debian sample media


@pytest.fixture(scope="module")
def hello():
    if not MOVIE_HELLO.exists():
        pytest.skip(f"Debian sample media {MOVIE_HELLO} not installed (forensics-samples-multimedia)")
    video = decode_video(MOVIE_HELLO, 8)
    times, rgb = independent_decode(MOVIE_HELLO, set(video.frame_indices.tolist()))
    return video, times, rgb


def test_movie_hello_counts_the_frames_that_exist(hello):
    video, times, _ = hello
    # The header says 250 frames; the MP4 edit list discards the last one, and no decoder shows it.
    with av.open(str(MOVIE_HELLO)) as container:
        assert container.streams.video[0].frames == 250
    assert video.n_source_frames == len(times) == 249
    assert video.warnings == []
    np.testing.assert_array_equal(video.frame_indices, sample_frame_indices(249, 8))


def test_movie_hello_frames_and_times_match_plain_decoding(hello):
    video, times, rgb = hello
    assert video.fps == pytest.approx(2500 / 83)  # the stream's average rate, not the 30 fps guess
    for index, frame in zip(video.frame_indices.tolist(), video.frames):
        np.testing.assert_array_equal(frame, rgb[index])
    # The frames really come every 1/30 s, but the stream's average rate (FFmpeg's avg_frame_rate,
    # frames / duration) is 30.12, so index / fps drifts from the timestamps: by less than a frame
    # over the clip.
    real = np.asarray(times)[video.frame_indices] - times[0]
    np.testing.assert_allclose(real, video.frame_indices / 30, atol=1e-3)
    assert np.abs(video.frame_times - real).max() < 1 / video.fps


def test_movie_hello_audio(hello):
    video, _, _ = hello
    audio = video.audio
    assert audio is not None and audio.sample_rate == 16000
    assert audio.duration == pytest.approx(8.32, abs=0.05)  # 390 AAC frames of 1024 at 48 kHz
    assert np.abs(audio.samples).max() > 0.05


def test_truncated_mp4_with_index_in_front(tmp_path):
    if not MOVIE_HELLO.exists():
        pytest.skip(f"{MOVIE_HELLO} not installed")
    data = MOVIE_HELLO.read_bytes()
    # Its index is at the front: cut to 1 MB, the file opens but holds only the first 66 packets.
    part = tmp_path / "part.mp4"
    part.write_bytes(data[:1_000_000])
    video = decode_video(part, 8)
    assert video.n_source_frames == 66
    assert any("declares 250 video frames but only 66" in w for w in video.warnings)
    # The last packet is cut short and does not decode: that sampled frame is reported missing.
    assert video.frame_indices.tolist() == [i for i in sample_frame_indices(66, 8).tolist() if i != 65]
    assert any("failed to decode" in w for w in video.warnings)
    assert video.audio is not None and 1.5 < video.audio.duration < 3.0

    # Cut inside the index's media data before the first frame: nothing to sample.
    head = tmp_path / "head.mp4"
    head.write_bytes(data[:2000])
    with raises_media_error("no video frames"):
        decode_video(head, 8)


@needs(MOVIE_HELLO_OGG)
def test_empty_ogg_packets_are_not_damage():
    # Ogg stores zero-length packets: movie-hello.ogg has 5572 among its Vorbis packets and 7 among
    # its Theora ones (a frame shown again). Demuxed, each has size 0 but a buffer, which FFmpeg
    # refuses to decode ("Invalid argument"); they were reported as 5579 damaged packets.
    # (pos is None only for the empty packets PyAV adds at the end to flush the decoders.)
    with av.open(str(MOVIE_HELLO_OGG)) as container:
        empty = [p for p in container.demux() if p.size == 0 and p.pos is not None]
        assert Counter(p.stream.type for p in empty) == {"audio": 5572, "video": 7}
        with pytest.raises(av.ArgumentError):
            empty[0].decode()

    video = decode_video(MOVIE_HELLO_OGG, 8)
    assert video.warnings == []
    assert video.audio is not None and video.audio.warnings == []
    assert decode_audio(MOVIE_HELLO_OGG).warnings == []
    # Nothing was lost by not decoding them: the 242 Theora pictures and the whole 8.24 s track.
    assert video.n_source_frames == 242
    assert video.audio.duration == pytest.approx(8.236, abs=0.01)


@pytest.fixture(scope="module")
def megamind():
    if not MEGAMIND.exists():
        pytest.skip(f"Debian sample media {MEGAMIND} not installed (opencv-doc)")
    return decode_video(MEGAMIND, 8)


def test_megamind_damaged_audio_packet_is_skipped(megamind):
    video = megamind
    # The AVI gives its B-frames scrambled timestamps: frames are indexed by output order.
    assert video.n_source_frames == 270
    np.testing.assert_array_equal(video.frame_indices, sample_frame_indices(270, 8))
    _, rgb = independent_decode(MEGAMIND, set(video.frame_indices.tolist()))
    for index, frame in zip(video.frame_indices.tolist(), video.frames):
        np.testing.assert_array_equal(frame, rgb[index])

    assert video.audio is not None
    assert 11.0 < video.audio.duration < 11.3  # 11.26 s track less one 32 ms AC-3 packet
    # The warning says how much is damaged and what that means for the answer.
    assert video.audio.warnings == [
        "skipped 1 damaged audio packet (InvalidDataError: Invalid data found when processing input): "
        "about 0.032 s of the sound is missing, the rest is heard"
    ]


def test_megamind_damaged_packet_is_reported_once(megamind):
    # The request layer shows the video's warnings and its audio track's: the damaged audio packet
    # is in the track's list only, so it is shown once.
    everything = megamind.warnings + megamind.audio.warnings
    assert sum("damaged" in w for w in everything) == 1
    assert megamind.warnings == []


@needs(VTEST)
def test_vtest_has_no_audio_track():
    video = decode_video(VTEST, 4)
    assert video.audio is None and video.warnings == [NO_AUDIO_WARNING]
    assert video.n_source_frames == 795 and video.fps == 10.0
    assert video.frames[0].shape == (576, 768, 3)


@needs(FRONT_CENTER)
def test_front_center_wav_is_resampled_to_16k():
    audio = decode_audio(FRONT_CENTER)
    assert audio.sample_rate == 16000
    assert audio.duration == pytest.approx(68545 / 48000, abs=0.002)
    assert 0.3 < np.abs(audio.samples).max() < 1.0


# --------------------------------------------------------------------------------------------------


def test_media_package_imports_no_torch():
    code = (
        "import sys, vinci_edge.media; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
