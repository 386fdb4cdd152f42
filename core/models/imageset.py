"""Where an experiment's images are: a template or a list of files.

This is the serialisable description only (as in a DIALS ``.expt``
imageset entry); reading pixels goes through :mod:`gonio.core.formats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ImageSetRef:
    kind: str = "ImageSequence"  # "ImageSequence" (rotation) or "ImageSet" (stills / list)
    template: str = ""  # e.g. /data/th_8_2_####.cbf; or a single NeXus master file
    paths: list[str] = field(default_factory=list)  # explicit file list when no template
    single_file_indices: list[int] = field(default_factory=list)  # images inside one file (HDF5)
    mask: str | None = ""
    gain: str | None = ""
    pedestal: str | None = ""
    dx: str | None = ""
    dy: str | None = ""
    params: dict = field(default_factory=dict)
    format: str = ""  # gonio format name (e.g. "miniCBF", "SMV", "NXmx"); extra key DIALS ignores

    def to_dict(self) -> dict:
        d = {"__id__": self.kind}
        if self.template or self.kind == "ImageSequence":
            d["template"] = self.template
        else:
            d["images"] = list(self.paths)
        if self.single_file_indices:
            d["single_file_indices"] = list(self.single_file_indices)
        d.update({"mask": self.mask, "gain": self.gain, "pedestal": self.pedestal,
                  "dx": self.dx, "dy": self.dy, "params": dict(self.params)})
        if self.format:
            d["gonio_format"] = self.format
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImageSetRef:
        kind = d.get("__id__", "ImageSequence")
        if kind == "ImageSweep":
            kind = "ImageSequence"
        return cls(
            kind=kind,
            template=d.get("template", ""),
            paths=list(d.get("images", [])),
            single_file_indices=list(d.get("single_file_indices", [])),
            mask=d.get("mask", ""),
            gain=d.get("gain", ""),
            pedestal=d.get("pedestal", ""),
            dx=d.get("dx", ""),
            dy=d.get("dy", ""),
            params=dict(d.get("params", {})),
            format=d.get("gonio_format", ""),
        )
