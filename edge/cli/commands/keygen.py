"""``edge keygen``: make an Ed25519 key pair for signing model packages."""

from __future__ import annotations

import argparse

from edge.cli import EXIT_OK

NAME = "keygen"
HELP = "write an Ed25519 key pair (signing.key mode 0600, signing.pub) for signing model updates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for signing.key and signing.pub")
    parser.add_argument("--force", action="store_true", help="replace an existing key pair")


def run(args: argparse.Namespace) -> int:
    from edge.signing import generate_keys, key_id, load_public_key

    key_path, pub_path = generate_keys(args.out, overwrite=args.force)
    print(f"private key {key_path} (mode 0600: keep it secret, use it with 'edge push-model --key')")
    kid = key_id(load_public_key(pub_path))
    print(f"public key  {pub_path} (key id {kid}: give it to devices with --trust)")
    return EXIT_OK
