"""An assistgraph tool plugin: exact arithmetic, so the model does not guess at sums.

Models are poor at multi-digit arithmetic; a tool that evaluates the expression is the usual fix.
The expression is parsed with `ast` and only numbers and arithmetic operators are evaluated
(`eval` would run any Python the model writes).
"""

from __future__ import annotations

import ast
import operator
from decimal import Decimal, InvalidOperation, getcontext

from langchain_core.tools import ToolException, tool

getcontext().prec = 50

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPONENT = 1000  # 10 ** 10 ** 10 would hang the process; the model never needs such powers
MAX_LENGTH = 500


def _evaluate(node: ast.AST) -> Decimal:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Decimal(str(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolException(f"exponent {right} is too large (at most {MAX_EXPONENT})")
        return _BINARY[type(node.op)](left, right)
    raise ToolException(f"unsupported element {ast.unparse(node)!r}: only numbers, + - * / // % ** and parentheses")


@tool(parse_docstring=True)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly. Use it for any calculation instead of working it out yourself.

    Args:
        expression: The expression in Python syntax, e.g. "(1234.5 * 3) / 7" or "2 ** 10".
    """
    if len(expression) > MAX_LENGTH:
        raise ToolException(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        value = _evaluate(ast.parse(expression.strip(), mode="eval"))
    except SyntaxError as exc:
        raise ToolException(f"not an arithmetic expression: {exc.msg}") from exc
    except ZeroDivisionError as exc:
        raise ToolException("division by zero") from exc
    except (InvalidOperation, OverflowError) as exc:
        raise ToolException(f"cannot compute: {exc}") from exc
    return f"{expression.strip()} = {value.normalize():f}"


# Failures come back to the model as the tool's output ("Error: ..."), so it can correct itself.
calculator.handle_tool_error = lambda exc: f"Error: {exc}"
