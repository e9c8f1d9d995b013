"""Cursor pagination of accounts and inquiries: bounds, cursors, filters and links.next."""

from __future__ import annotations

import httpx
import pytest

from .api_calls import create_account, create_inquiry, envelope


def walk(http: httpx.Client, server_url: str, path: str, **params: str) -> list[list[str]]:
    """Follow ``links.next`` from the first page; return the ids page by page."""
    pages: list[list[str]] = []
    response = http.get(path, params=params)
    while True:
        assert response.status_code == 200, response.text
        document = response.json()
        pages.append([item["id"] for item in document["data"]])
        next_link = document["links"]["next"]
        if next_link is None:
            return pages
        assert next_link.startswith("/api/v1/")
        response = http.get(server_url + next_link)


def test_accounts_walk_newest_first_across_pages(server, http: httpx.Client) -> None:
    created = [create_account(http, name_first=f"n{i}")["id"] for i in range(7)]
    pages = walk(http, server.url, "/accounts", **{"page[size]": "3"})
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == created[::-1]


def test_an_exactly_full_last_page_has_no_next_link(server, http: httpx.Client) -> None:
    for _ in range(4):
        create_account(http)
    pages = walk(http, server.url, "/accounts", **{"page[size]": "2"})
    assert [len(p) for p in pages] == [2, 2]


def test_default_page_size_is_10(http: httpx.Client) -> None:
    for _ in range(11):
        create_account(http)
    document = http.get("/accounts").json()
    assert len(document["data"]) == 10
    assert "page%5Bsize%5D=10" in document["links"]["next"]


def test_filters_are_kept_in_links_next(server, http: httpx.Client) -> None:
    wanted = [create_inquiry(http, reference_id="same")["id"] for _ in range(5)]
    create_inquiry(http, reference_id="other")
    pages = walk(
        http, server.url, "/inquiries", **{"page[size]": "2", "filter[reference_id]": "same"}
    )
    assert [i for p in pages for i in p] == wanted[::-1]


def test_inquiries_walk_all_pages(server, http: httpx.Client) -> None:
    created = [create_inquiry(http, reference_id=f"r{i}")["id"] for i in range(5)]
    pages = walk(http, server.url, "/inquiries", **{"page[size]": "2"})
    assert [i for p in pages for i in p] == created[::-1]


def test_page_size_100_is_allowed(http: httpx.Client) -> None:
    assert http.get("/accounts", params={"page[size]": "100"}).status_code == 200
    assert http.get("/accounts", params={"page[size]": "1"}).status_code == 200


@pytest.mark.parametrize("size", ["0", "101", "-1", "abc", "1.5", "", "9" * 5000, "١"])
@pytest.mark.parametrize("path", ["/accounts", "/inquiries"])
def test_page_size_out_of_bounds_is_400(http: httpx.Client, path: str, size: str) -> None:
    errors = envelope(http.get(path, params={"page[size]": size}), 400, "invalid_parameter")
    assert "page[size]" in errors[0]["details"]


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "", "act_", "inq_00000000000000000000000000", "act_0000000000000000000000000!"],
)
def test_garbage_account_cursors_are_400(http: httpx.Client, cursor: str) -> None:
    errors = envelope(http.get("/accounts", params={"page[after]": cursor}), 400)
    assert errors[0]["code"] == "invalid_parameter"
    assert "page[after]" in errors[0]["details"]


def test_garbage_inquiry_cursor_is_400(http: httpx.Client) -> None:
    envelope(
        http.get("/inquiries", params={"page[after]": "act_00000000000000000000000000"}),
        400,
        "invalid_parameter",
    )


@pytest.mark.parametrize("name", ["filter[name]", "page[before]", "page[number]"])
def test_unsupported_list_parameters_are_400(http: httpx.Client, name: str) -> None:
    errors = envelope(http.get("/accounts", params={name: "1"}), 400, "invalid_parameter")
    assert name in errors[0]["details"]


def test_a_cursor_past_the_end_gives_an_empty_page(http: httpx.Client) -> None:
    create_account(http)
    document = http.get("/accounts", params={"page[after]": "act_00000000000000000000000000"})
    assert document.json() == {"data": [], "links": {"next": None}}


def test_lists_show_only_the_callers_organization(server, http: httpx.Client) -> None:
    mine = create_account(http)["id"]
    with server.client(server.new_key(org="globex")) as other:
        create_account(other)
        create_inquiry(other, reference_id="theirs")
    assert [a["id"] for a in http.get("/accounts").json()["data"]] == [mine]
    assert http.get("/inquiries").json()["data"] == []
