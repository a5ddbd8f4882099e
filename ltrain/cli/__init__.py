"""Thin Hydra entry points; each calls a plain function that tests call directly.

The one place ltrain imports its own modules inside functions, on purpose: an entry point imports the layers
below it when its command runs, so ``--help`` and a mistyped override are answered before torch, timm and
Lightning load (start-up time). Everything else in ltrain imports at module top (docs/architecture.md).
"""
