"""Several short files in one 30-s window: stock Whisper without paying for its padding.

Whisper must hear each window padded to 30 s (unpadded it loops), so a 5-s file costs the encoder as much as
30 s of speech. When the output language is fixed, short files are joined, with ``GAP`` seconds of silence
between them, into one waveform of at most ``CAPACITY`` seconds; the joined waveform is transcribed with
timestamps like any file, and its segments are handed back to the files they fall in, in each file's own time.
Twelve files of 3-7 s take three windows instead of twelve.

Nothing moves between files unseen: a segment that spans the silence between two files (its words could belong
to either), and a file with speech that received no segment, make :func:`split` name those files, and the caller
transcribes them again alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from generalist_cli.media.audio import SAMPLE_RATE

GAP = 2.0  # seconds of silence between joined files: Whisper ends a segment there (1.0 and 1.5 measured worse)
CAPACITY = 28.0  # seconds a joined waveform may hold (a 30-s window, its last timestamps kept clear of the edge)
MIN_OVERLAP = 0.4  # seconds a segment must overlap a file to count as being in it
MIN_SPEECH = 1.0  # seconds of speech a file must hold for an empty result to count as lost


@dataclass(frozen=True)
class Group:
    members: tuple[int, ...]  # indices into the files given to :func:`plan`
    offsets: tuple[float, ...]  # where each member starts in the joined waveform, seconds
    durations: tuple[float, ...]


def plan(durations: list[float], *, capacity: float = CAPACITY, gap: float = GAP) -> list[Group]:
    """Files (by ``durations`` in seconds) grouped first-fit, in order, into joined waveforms of at most
    ``capacity`` seconds; a file longer than that is a group of its own (its long-form windows as usual)."""
    bins: list[list[int]] = []
    used: list[float] = []
    for i, d in enumerate(durations):
        for b, total in enumerate(used):
            if d <= capacity and total + gap + d <= capacity:
                bins[b].append(i)
                used[b] = total + gap + d
                break
        else:
            bins.append([i])
            used.append(d)
    groups = []
    for members in bins:
        offsets, at = [], 0.0
        for i in members:
            offsets.append(at)
            at += durations[i] + gap
        groups.append(Group(tuple(members), tuple(offsets), tuple(durations[i] for i in members)))
    return groups


def join(audios: list[np.ndarray], group: Group) -> np.ndarray:
    """The members of ``group`` one after another, silence between them, at the group's offsets."""
    starts = [round(o * SAMPLE_RATE) for o in group.offsets]
    out = np.zeros(max(at + len(audios[i]) for i, at in zip(group.members, starts)), dtype=np.float32)
    for i, at in zip(group.members, starts):
        out[at : at + len(audios[i])] = audios[i]
    return out


def speech_of(group: Group, speech: list[tuple[tuple[float, float], ...]] | None) -> tuple[tuple[float, float], ...]:
    """The joined waveform's speech regions (seconds): each member's (all of it when ``speech`` is None)."""
    out = []
    for i, o, d in zip(group.members, group.offsets, group.durations):
        regions = speech[i] if speech is not None else ((0.0, d),)
        out.extend((o + a, o + b) for a, b in regions)
    return tuple(out)


def split(transcript, group: Group, speech: list[tuple[tuple[float, float], ...]] | None):
    """The joined ``transcript`` handed back to the members: ``(transcripts, redo)``, a transcript per member
    (segments in the member's own time) and the members to transcribe again alone."""
    parts = {i: [] for i in group.members}
    redo: set[int] = set()
    for s in transcript.segments:
        inside = [
            k
            for k, (o, d) in enumerate(zip(group.offsets, group.durations))
            if min(s.end, o + d) - max(s.start, o) >= min(MIN_OVERLAP, (s.end - s.start) / 2)
        ]
        if not inside:  # in a gap: the nearest member by the segment's middle
            middle = (s.start + s.end) / 2
            inside = [min(range(len(group.offsets)), key=lambda k: _distance(middle, group, k))]
        if len(inside) > 1:  # spans the silence between files: whose words are whose is unknown
            redo.update(group.members[k] for k in inside)
            continue
        k = inside[0]
        parts[group.members[k]].append(_shift(s, group.offsets[k], group.durations[k]))
    out = []
    for k, i in enumerate(group.members):
        held = sum(b - a for a, b in (speech[i] if speech is not None else ((0.0, group.durations[k]),)))
        if not parts[i] and held >= MIN_SPEECH:
            redo.add(i)
        out.append(replace(transcript, duration=group.durations[k], segments=parts[i]))
    return out, sorted(redo)


def _distance(t: float, group: Group, k: int) -> float:
    o, d = group.offsets[k], group.durations[k]
    return max(o - t, t - (o + d), 0.0)


def _shift(segment, offset: float, duration: float):
    def at(t: float) -> float:  # rounded to the millisecond, never past the file's end
        return min(round(min(max(t - offset, 0.0), duration), 3), duration)

    words = tuple(replace(w, start=at(w.start), end=at(w.end)) for w in segment.words)
    return replace(segment, start=at(segment.start), end=at(segment.end), words=words)
