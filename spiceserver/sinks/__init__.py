"""Audio sinks: where the client's microphone (the record channel) goes."""

from __future__ import annotations

from spiceserver.sinks.audio import (
    NumpyRecordSink,
    PulseAudioRecordSink,
    RecordSink,
    WantMicrophone,
)

__all__ = ["NumpyRecordSink", "PulseAudioRecordSink", "RecordSink", "WantMicrophone"]
