"""The autoscale formula language, parsed with lark (LALR).

What the grammar accepts follows Microsoft's article "Create a formula to
automatically scale compute nodes in a Batch pool"
(https://learn.microsoft.com/azure/batch/batch-automatic-scaling): statements
separated by ';' (line breaks and // comments allowed), assignments to
service-defined ($Name) or user-defined (name or $name) variables, the
operators of its "Operations" table (+ - * / < <= == >= > != && || ! and
unary -), the ternary ``a ? b : c``, function calls, methods of the sampled
variables (``$PendingTasks.GetSample(...)``), members of a timestamp
(``time().weekday``), doubles and strings.

``parse`` turns a formula into a small tree of tuples, each node carrying the
line and column it starts at, so evaluation errors can say where they are, as
the service's do ("Line 1, Col 37: ...").
"""

from __future__ import annotations

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput

# The article: "The formula string cannot exceed 8 KB".
MAX_FORMULA_LENGTH = 8192

GRAMMAR = r"""
    start: [stmt] (";" [stmt])*

    ?stmt: NAME "=" expr               -> assign
         | expr                        -> bare

    ?expr: or_expr
         | or_expr "?" expr ":" expr   -> ternary

    ?or_expr: and_expr
            | or_expr OR and_expr      -> binop
    ?and_expr: cmp
             | and_expr AND cmp        -> binop
    ?cmp: sum
        | cmp CMP sum                  -> binop
    ?sum: product
        | sum ADD product              -> binop
    ?product: unary
            | product MUL unary        -> binop
    ?unary: postfix
          | NEG unary                  -> unop
    ?postfix: atom
            | postfix "." NAME "(" [args] ")"   -> method
            | postfix "." NAME                  -> member
    ?atom: NUMBER                      -> number
         | STRING                      -> string
         | NAME "(" [args] ")"         -> call
         | NAME                        -> var
         | "[" [args] "]"              -> vector
         | "(" expr ")"
    args: expr ("," expr)*

    OR: "||"
    AND: "&&"
    CMP: "<=" | ">=" | "==" | "!=" | "<" | ">"
    ADD: "+" | "-"
    MUL: "*" | "/"
    NEG: "-" | "!"
    NAME: /\$?[A-Za-z_][A-Za-z0-9_]*/
    NUMBER: /(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/
    STRING: /"[^"\n]*"/

    COMMENT: /\/\/[^\n]*/
    %import common.WS
    %ignore WS
    %ignore COMMENT
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=True)


class FormulaSyntaxError(ValueError):
    """A formula the grammar refuses; ``where`` is "Line L, Col C"."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where, self.detail = where, detail


def _pos(tok) -> tuple[int, int]:
    if isinstance(tok, Token):
        return tok.line, tok.column
    meta = getattr(tok, "meta", None)
    return (getattr(meta, "line", 1), getattr(meta, "column", 1)) if meta is not None else (1, 1)


@v_args(meta=True)
class _ToTree(Transformer):
    """Lark's parse tree -> tuples ``(kind, (line, col), ...)``."""

    def start(self, meta, stmts):
        return [s for s in stmts if s is not None]

    def assign(self, meta, children):
        name, value = children
        return ("assign", _pos(name), str(name), value)

    def bare(self, meta, children):
        return ("bare", (meta.line, meta.column), children[0])

    def ternary(self, meta, children):
        cond, yes, no = children
        return ("ternary", (meta.line, meta.column), cond, yes, no)

    def binop(self, meta, children):
        left, op, right = children
        return ("binop", _pos(op), str(op), left, right)

    def unop(self, meta, children):
        op, operand = children
        return ("unop", _pos(op), str(op), operand)

    def method(self, meta, children):
        target, name, args = children   # placed where the sampled variable starts
        return ("method", (meta.line, meta.column), target, str(name), args or [])

    def member(self, meta, children):
        target, name = children
        return ("member", _pos(name), target, str(name))

    def number(self, meta, children):
        return ("num", _pos(children[0]), float(children[0]))

    def string(self, meta, children):
        return ("str", _pos(children[0]), str(children[0])[1:-1])

    def call(self, meta, children):
        name, args = children
        return ("call", _pos(name), str(name), args or [])

    def var(self, meta, children):
        return ("var", _pos(children[0]), str(children[0]))

    def vector(self, meta, children):
        return ("vector", (meta.line, meta.column), children[0] or [])

    def args(self, meta, children):
        return list(children)


def parse(formula: str) -> list:
    """The formula's statements, or FormulaSyntaxError."""
    try:
        tree = _PARSER.parse(formula)
    except UnexpectedInput as e:
        line, col = getattr(e, "line", 1), getattr(e, "column", 1)
        token = getattr(e, "token", None)
        if token is not None and getattr(token, "type", "") == "$END":
            detail = "Unexpected end of formula"
        elif token is not None:
            detail = f"Unexpected token '{token}'"
        else:
            char = getattr(e, "char", "?")
            detail = f"Unexpected character '{char}'"
        raise FormulaSyntaxError(f"Line {max(line, 1)}, Col {max(col, 1)}", detail) from None
    return _ToTree().transform(tree)
