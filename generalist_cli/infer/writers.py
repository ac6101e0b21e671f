"""Render transcripts as txt, json (one object per line), srt and vtt. Pure functions: data in, text out."""

from __future__ import annotations

import json

FORMATS = ("txt", "json", "srt", "vtt")


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render_channels(transcripts, fmt: str, *, file: str) -> str:
    """A file transcribed channel by channel: json, one object per channel (with ``channel``); txt, one block per
    channel headed ``channel N:``; vtt, one block per channel after a ``NOTE channel N``; srt (which has no
    notes), the cues of every channel in time order, each text led by ``[channel N]``."""
    if fmt == "json":
        return "".join(render(t, fmt, file=file) for t in transcripts)
    if fmt == "txt":
        return "\n".join(f"channel {t.channel}: {render(t, fmt, file=file)}" for t in transcripts)
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(
            f"NOTE channel {t.channel}\n\n" + render(t, fmt, file=file)[8:] for t in transcripts
        )
    from types import SimpleNamespace

    cues = sorted(
        (
            SimpleNamespace(start=s.start, end=s.end, text=f"[channel {t.channel}] {s.text.strip()}", words=())
            for t in transcripts
            for s in t.segments
        ),
        key=lambda c: (c.start, c.end),
    )
    return render(SimpleNamespace(segments=cues), fmt, file=file)


def render(transcript, fmt: str, *, file: str) -> str:
    """The text of ``transcript`` in ``fmt``, ending with a newline."""
    segs = transcript.segments
    if fmt == "txt":
        return transcript.text + "\n"
    if fmt == "json":
        obj = {
            "file": file,
            "text": transcript.text,
            "language": transcript.language,
            "duration": round(transcript.duration, 3),
            "segments": [
                {
                    "start": s.start,
                    "end": s.end,
                    "text": s.text.strip(),
                    **({"language": s.language} if s.language else {}),
                    **(
                        {
                            "words": [
                                {"start": w.start, "end": w.end, "word": w.word.strip(), "probability": w.probability}
                                for w in s.words
                            ]
                        }
                        if s.words
                        else {}
                    ),
                }
                for s in segs
            ],
        }
        if transcript.language_probability is not None:
            obj["language_probability"] = round(transcript.language_probability, 4)
        if getattr(transcript, "channel", None) is not None:
            obj["channel"] = transcript.channel
        return json.dumps(obj, ensure_ascii=False) + "\n"
    if any(s.words for s in segs) and fmt in ("srt", "vtt"):  # word timestamps: one cue per word
        from types import SimpleNamespace

        segs = [SimpleNamespace(start=w.start, end=w.end, text=w.word) for s in segs for w in s.words]
    if fmt == "srt":
        blocks = [
            f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n" for i, s in enumerate(segs, 1)
        ]
        return "\n".join(blocks)
    if fmt == "vtt":
        blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in segs]
        return "WEBVTT\n\n" + "\n".join(blocks)
    raise ValueError(f"unknown format {fmt!r}")
