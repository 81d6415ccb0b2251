"""HoT pipeline: two resumable stages for video action recognition with high-order pooling.

core/ (settings, cache, item loop) -> datasets/ -> extract/ (stage 1) -> pooling/ (stage 2)
-> learn/ (heads, attention, training) -> results/ (ledger, tables, report); idt/ beside them."""
