"""Stage 1: decode each video once, cut windows of several lengths and sampling rates, run a
backbone (backbones/, a registry) on RGB and optical-flow streams, store one vector per window."""
