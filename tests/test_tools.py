"""tools/sanitizer_reports.py flags what is ours and only that (so the sanitizer run can fail)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def reports_module():
    spec = importlib.util.spec_from_file_location("sanitizer_reports", ROOT / "tools" / "sanitizer_reports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PYTHON_LEAK = """Direct leak of 64 byte(s) in 1 object(s) allocated from:
    #0 0x7f in malloc (/usr/lib/gcc/x86_64-linux-gnu/12/libasan.so+0xbd)
    #1 0x7f in PyObject_Malloc (/usr/lib/libpython3.11.so.1.0+0x12)
"""
OUR_LEAK = """Indirect leak of 4096 byte(s) in 1 object(s) allocated from:
    #0 0x7f in aligned_alloc (/usr/lib/gcc/x86_64-linux-gnu/12/libasan.so+0xbd)
    #1 0x7f in lstmcpp::AlignedAllocator<float>::allocate (/site-packages/lstmcpp/_core.cpython-311-x86_64-linux-gnu.so+0x1)
"""


def test_reader_ignores_the_interpreter_and_flags_ours(tmp_path, capsys):
    module = reports_module()
    (tmp_path / "asan.1").write_text("=================\n" + PYTHON_LEAK + "\n" + PYTHON_LEAK)
    assert module.main(str(tmp_path)) == 0
    (tmp_path / "asan.2").write_text(PYTHON_LEAK + "\n" + OUR_LEAK)
    assert module.main(str(tmp_path)) == 1
    assert "leak through lstmcpp" in capsys.readouterr().out


def test_reader_flags_any_sanitizer_error(tmp_path):
    module = reports_module()
    (tmp_path / "asan.3").write_text("==1==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x6")
    assert module.main(str(tmp_path)) == 1
    (tmp_path / "asan.3").write_text("lstm.cpp:120:5: runtime error: signed integer overflow")
    assert module.main(str(tmp_path)) == 1


def test_package_modules_import_without_cycles():
    """Module-level imports inside lstmcpp form no cycle (the layer does not import what imports it)."""
    import ast
    import pathlib

    import lstmcpp

    root = pathlib.Path(lstmcpp.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__") if name != "__init__" else ""] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    edges.add(sub if sub in modules else target)
        graph[name] = {e for e in edges if e in modules and e != name}
    # the package's __init__ imports everything; cycles through it are how packages work
    graph.pop("", None)
    for deps in graph.values():
        deps.discard("")

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, f"import cycles: {cycles}"
