"""Improved dense trajectories (Wang & Schmid, ICCV 2013) and their Fisher-vector encoding, for
fusion with HoT (docs/method.md, IDT and fusion): extraction, DenseTrackStab's text format, encoding.
"""
from pipeline.idt.descriptors import OUTPUT_KEYS, frame_descriptors
from pipeline.idt.fisher import FisherVectorEncoder, fisher_vector
from pipeline.idt.fusion import fuse_kernels, fuse_scores, select_fusion_weight
from pipeline.idt.settings import IDTConfig
from pipeline.idt.textformat import read_idt_text, write_idt_text
from pipeline.idt.trajectories import DenseTracker, extract_idt, extract_idt_video

__all__ = ["IDTConfig", "DenseTracker", "extract_idt", "extract_idt_video", "frame_descriptors",
           "OUTPUT_KEYS", "read_idt_text", "write_idt_text", "FisherVectorEncoder",
           "fisher_vector", "fuse_kernels", "fuse_scores", "select_fusion_weight"]
