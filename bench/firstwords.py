"""First words kept: how much of the speech that began at the press the agent received, found by alignment.

The agent keeps what it received in two parts: the pre-connect buffer (audio recorded while connecting) and the
live stream (silence before the client sent anything included). Each part is placed on the original speech by
cross-correlating loudness envelopes; a 10 ms frame of the speech counts as kept when the aligned part holds it
audibly. Only voiced frames of the speech (within 35 dB of its loudest frame) are counted.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]
RATE = 16000
FRAME = RATE // 100
VOICED_BELOW_PEAK_DB = 35.0
#: An aligned frame holds the speech when its RMS is above this (int16 units): clearly more than decoded silence.
AUDIBLE_RMS = 30.0
#: Pieces of a received part are aligned separately; a piece counts only if it matches the speech this well.
PIECE_S = 0.2
SURE_MATCH = 0.5
MIN_MATCH = 0.2
MAX_WARP_S = 0.1


def frame_rms(samples: Samples) -> npt.NDArray[np.float64]:
    """RMS of each whole 10 ms frame."""
    n = len(samples) // FRAME
    frames = samples[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    rms: npt.NDArray[np.float64] = np.sqrt(np.mean(frames**2, axis=1))
    return rms


def voiced_frames(speech: Samples) -> npt.NDArray[np.bool_]:
    """Which 10 ms frames of ``speech`` carry voice."""
    rms = frame_rms(speech)
    mask: npt.NDArray[np.bool_] = rms > rms.max() * 10 ** (-VOICED_BELOW_PEAK_DB / 20)
    return mask


def align(part: Samples, speech: Samples) -> tuple[int, float] | None:
    """Where ``part`` starts in ``speech`` (samples; negative: before it) and how well it matches (0-1).

    None when ``part`` is silent.

    Normalised cross-correlation of the waveforms over their overlap (at least a quarter of the shorter one): noise
    suppression, gain control and Opus keep speech's waveform close enough for a sharp peak.
    """
    if len(part) < FRAME or frame_rms(part).max(initial=0.0) < AUDIBLE_RMS:
        return None
    a, b = part.astype(np.float64), speech.astype(np.float64)
    size = 1 << (len(a) + len(b)).bit_length()
    # num[k] = sum_i a[i] b[i + k]; k < 0 wraps around to the end of the array
    num = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = np.arange(-(len(a) - 1), len(b))
    ca = np.concatenate([[0.0], np.cumsum(a**2)])
    cb = np.concatenate([[0.0], np.cumsum(b**2)])
    lo_b, hi_b = np.clip(lags, 0, len(b)), np.clip(lags + len(a), 0, len(b))
    lo_a, hi_a = lo_b - lags, hi_b - lags
    energy = (ca[hi_a] - ca[lo_a]) * (cb[hi_b] - cb[lo_b])
    overlap = hi_b - lo_b
    score = np.where(
        (overlap >= min(len(a), len(b)) // 4) & (energy > 0), num[lags % size] / np.sqrt(np.maximum(energy, 1e-9)), 0
    )
    best = int(np.argmax(score))
    return int(lags[best]), float(score[best])


def kept_fraction(speech: Samples, parts: list[Samples]) -> tuple[float, list[float]]:
    """Fraction of voiced speech frames held audibly by at least one of ``parts``; and where each part starts (s).

    Each part is aligned piece by piece (``PIECE_S`` long, overlapping by half): a receiver's jitter buffer
    stretches and squeezes audio by tens of milliseconds, which no single offset fits. Pieces that match well fix
    where the part lies; a piece counts if it lies within ``MAX_WARP_S`` of that.
    """
    voiced = voiced_frames(speech)
    kept = np.zeros_like(voiced)
    starts: list[float] = []
    piece = int(PIECE_S * RATE) // FRAME * FRAME
    for part in parts:
        audible = frame_rms(part) > AUDIBLE_RMS
        placed: list[tuple[int, int, float]] = []  # (begin in part, offset into speech, match)
        for begin in range(0, max(1, len(part) - piece // 2), piece // 2):
            found = align(part[begin : begin + piece], speech)
            if found is not None:
                placed.append((begin, found[0] - begin, found[1]))
        sure = [offset for _, offset, match in placed if match >= SURE_MATCH]
        if not sure:
            starts.append(float("nan"))
            continue
        middle = float(np.median(sure))
        starts.append(round(middle / RATE, 3))
        for begin, offset, match in placed:
            # quieter pieces (a word's tail) match less well: take them where the sure pieces put the part
            if match < MIN_MATCH or abs(offset - middle) > MAX_WARP_S * RATE:
                continue
            for k in range(begin // FRAME, min(len(audible), (begin + piece) // FRAME)):
                j = round((k * FRAME + offset) / FRAME)
                if audible[k] and 0 <= j < len(voiced):
                    kept[j] = True
    total = int(voiced.sum())
    return (float((kept & voiced).sum()) / total if total else 0.0), starts


def kept_after(speech: Samples, seconds: float) -> float:
    """Fraction of voiced speech frames at or after ``seconds``: what a client that starts sending then keeps."""
    voiced = voiced_frames(speech)
    first = int(np.ceil(seconds * 100))
    total = int(voiced.sum())
    return float(voiced[max(0, first) :].sum()) / total if total else 0.0
