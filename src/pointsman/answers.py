"""Facts about an answer's text, for the judges of a cascade and the learned verifier: refusal
and hedging phrases, and written calculations whose stated result is wrong. Pure functions; no I/O."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

# Answers that decline, hedge into ignorance or give up: a stronger model may do better.
REFUSAL_PATTERNS = (
    r"\bI (?:don't|do not) know\b",
    r"\bI(?:'m| am) not (?:sure|certain|able)\b",
    r"\bI can(?:not|'t) (?:help|answer|assist|determine|solve|provide)\b",
    r"\bI(?:'m| am) (?:unable|sorry, but)\b",
    r"\bas an AI\b",
    r"\b(?:insufficient|not enough) information\b",
    r"\bunable to (?:determine|answer|solve)\b",
)


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
# Written calculations: "<<12*3=36>>" (calculator annotations) or "12 * 3 = 36" inline: a run
# of digits, spaces, operators and parentheses that starts with a number or "(", holds an
# operator after its first number, and ends at "=", then the stated number (not itself the
# start of more arithmetic). Found by a scan that reads each run once: a single regular
# expression for this backtracks quadratically (or worse) on long runs without "=".
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_CANDIDATE = re.compile(r"<<|\(|-?\d")
_RUN = re.compile(r"[\d\s.,+\-*/x×÷()]*+")
_OPERATOR_THEN_EQUALS = re.compile(r"[\d\s.,()]*+[+\-*/x×÷][\d\s.,+\-*/x×÷()]*+=")
_STATED = re.compile(rf"=\s*\$?({_NUMBER})(?!\s*(?:[*/×÷]|[+\-x]\s*\d))")


def calculations(text: str) -> Iterator[tuple[str, str]]:
    """(expression, stated result) of each written calculation, left to right."""
    pos = 0
    while (candidate := _CANDIDATE.search(text, pos)) is not None:
        start = candidate.start()
        if candidate.group() == "<<":
            annotation = _ANNOTATION.match(text, start)
            if annotation is not None:
                yield annotation.group(1), annotation.group(2)
                pos = annotation.end()
            else:
                pos = start + 1
            continue
        inline = _OPERATOR_THEN_EQUALS.match(text, candidate.end() if text[start] == "-" else start + 1)
        stated = _STATED.match(text, inline.end() - 1) if inline is not None else None
        if inline is not None and stated is not None:
            yield text[start : inline.end() - 1], stated.group(1)
            pos = stated.end()
        else:
            # Every later start in this run ends at the same place and fails the same way.
            pos = max(_RUN.match(text, start).end(), start + 1)  # type: ignore[union-attr]


def arithmetic_error(text: str) -> str | None:
    """The first written calculation whose stated result is wrong, or None."""
    return next(_wrong_calculations(text), None)


def arithmetic_errors(text: str) -> int:
    """How many written calculations state a wrong result."""
    return sum(1 for _ in _wrong_calculations(text))


def _wrong_calculations(text: str) -> Iterator[str]:
    for expression, stated in calculations(text):
        value = _evaluate(expression)
        claimed = _evaluate(stated)
        if value is None or claimed is None:
            continue
        if abs(value - claimed) > 0.01 * max(1.0, abs(value)):
            yield f"{expression.strip()} = {stated.strip()}"


# Plain numbers and "a op b", the usual written calculations, skip the parser (it costs ~20 us);
# integers with leading zeros are left to it, which refuses them as Python does.
_PLAIN = re.compile(r"(-?(?:0|[1-9]\d*)(?:\.\d+)?)(?:\s*([-+*/])\s*((?:0|[1-9]\d*)(?:\.\d+)?))?")


def _evaluate(expression: str) -> float | None:
    """Evaluate +, -, *, / and parentheses over numbers; None for anything else."""

    cleaned = (
        expression.replace(",", "").replace("×", "*").replace("x", "*").replace("÷", "/").replace("$", "")
    ).strip()
    plain = _PLAIN.fullmatch(cleaned)
    if plain is not None:
        left, op, right = plain.groups()
        a = float(left)
        if op is None:
            return a
        b = float(right)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return a / b if b != 0 else None
    try:
        tree = ast.parse(cleaned, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: too many digits
        return None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            return left / right
        raise ValueError("not arithmetic")

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return None
