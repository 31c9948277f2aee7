"""The dashboard's lists are paged (model.js ``page``): pure, run under Node.js."""

from __future__ import annotations

from ..js import model_url, node


def test_the_dashboard_pages_its_lists():
    got = node(f"import * as m from '{model_url()}';\n"
               "const items = Array.from({length: 106}, (_, i) => i);\n"
               "console.log(JSON.stringify([m.page(items, 0, 50), m.page(items, 2, 50),\n"
               "  m.page(items, 9, 50), m.page([], 3, 50), m.page(items, -1, 50)]\n"
               "  .map((p) => [p.rows.length, p.rows[0] ?? null, p.index, p.pages, p.first,\n"
               "    p.last, p.total])));")
    assert got == [[50, 0, 0, 3, 1, 50, 106], [6, 100, 2, 3, 101, 106, 106],
                   [6, 100, 2, 3, 101, 106, 106],  # past the last page: the last
                   [0, None, 0, 1, 0, 0, 0], [50, 0, 0, 3, 1, 50, 106]]
