"""The `deltamem` command line: chat, update, fork, state (and create, list, delete); serve, train and eval
when the server package is installed."""

from __future__ import annotations

import argparse
import json
import os
import sys

import grpc
from google.protobuf.json_format import MessageToDict

from deltamem.client.sync import DEFAULT_TARGET, MemoryClient, tls_channel

# commands that live in the server package (`pip install deltamem`), not in this light client
SERVER_COMMANDS = {"serve": "deltamem.service.cli", "train": "deltamem.evals.cli", "eval": "deltamem.evals.cli"}


def _server_command(argv: list[str]) -> int:
    import importlib

    try:
        module = importlib.import_module(SERVER_COMMANDS[argv[0]])
    except ImportError:
        print(f"error: `deltamem {argv[0]}` needs the server package: pip install deltamem", file=sys.stderr)
        return 2
    return module.main(argv[1:]) if argv[0] == "serve" else module.main(argv)


def _print_json(message) -> None:
    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _read_text(args) -> str:
    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            return handle.read()
    if args.text is not None:
        return args.text
    return sys.stdin.read()


def _chat(client: MemoryClient, args) -> int:
    session_id = args.session or client.create_session().session_id
    if not args.session:
        print(f"session {session_id}", file=sys.stderr)
    lines = [args.message] if args.message is not None else _prompt_lines()
    for line in lines:
        stream = client.generate(
            session_id,
            [{"role": "user", "content": line}],
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
        )
        for delta in stream:
            print(delta.text, end="", flush=True)
        print()
        result = stream.result
        print(f"[{result.usage.generated_tokens} tokens, memory version {result.memory_version}]", file=sys.stderr)
    return 0


def _prompt_lines():
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except EOFError:
            return
        if line.strip():
            yield line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltamem", description="Talk to a deltamem server.")
    parser.add_argument(
        "--target",
        default=os.environ.get("DELTAMEM_TARGET", DEFAULT_TARGET),
        help="server address (default: $DELTAMEM_TARGET or %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="deadline per call in seconds")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("DELTAMEM_API_KEY"),
        help="API key for servers with tenants (default: $DELTAMEM_API_KEY)",
    )
    parser.add_argument("--tls-ca", help="PEM CA bundle to verify a TLS server (enables TLS)")
    parser.add_argument("--tls-cert", help="PEM client certificate, for servers that require mutual TLS")
    parser.add_argument("--tls-key", help="PEM client private key")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the server (arguments pass through to deltamem-server)", add_help=False)
    create = sub.add_parser("create", help="create a session and print its id")
    create.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    chat = sub.add_parser("chat", help="chat in a session (a new one unless --session); lines from stdin")
    chat.add_argument("--session")
    chat.add_argument("--message", "-m", help="send one message and exit")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.add_argument("--seed", type=int)
    update = sub.add_parser("update", help="write text into a session's memory")
    update.add_argument("session")
    update.add_argument("text", nargs="?", help="the text (default: --file, else stdin)")
    update.add_argument("--file")
    fork = sub.add_parser("fork", help="fork a session; prints the new session")
    fork.add_argument("session")
    state = sub.add_parser("state", help="print a session's memory (summary unless --full)")
    state.add_argument("session")
    state.add_argument("--full", action="store_true", help="include every state value")
    sub.add_parser("list", help="list sessions")
    delete = sub.add_parser("delete", help="delete a session")
    delete.add_argument("session")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SERVER_COMMANDS:
        return _server_command(argv)
    args = build_parser().parse_args(argv)
    channel = tls_channel(args.target, args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    with MemoryClient(args.target, channel=channel, timeout=args.timeout, api_key=args.api_key) as client:
        try:
            if args.command == "create":
                metadata = dict(item.split("=", 1) for item in args.meta)
                _print_json(client.create_session(metadata))
            elif args.command == "chat":
                return _chat(client, args)
            elif args.command == "update":
                _print_json(client.update_memory(args.session, _read_text(args)))
            elif args.command == "fork":
                _print_json(client.fork_session(args.session))
            elif args.command == "state":
                _print_json(client.read_state(args.session, summary_only=not args.full))
            elif args.command == "list":
                for session in client.list_sessions():
                    _print_json(session)
            elif args.command == "delete":
                client.delete_session(args.session)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
