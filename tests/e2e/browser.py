"""What the web pages' tests ask of Chromium besides clicks: whether the page broke its
Content-Security-Policy, and whether that policy is the strict one."""

from __future__ import annotations

from playwright.async_api import ConsoleMessage, Page

_VIOLATION = "Content Security Policy"
# Runs in every document of the page before its own code (Playwright's init scripts are not
# subject to the page's CSP): each violation the browser reports becomes a console line too.
_REPORT_VIOLATIONS = f"""
document.addEventListener("securitypolicyviolation", (event) => {{
  console.error("{_VIOLATION} violation: " + event.violatedDirective + " " + event.blockedURI);
}}, true);
"""


async def watch_csp(page: Page) -> list[str]:
    """The CSP violations ``page`` reports from now on, across navigations (Chromium's own
    console errors and ``securitypolicyviolation`` events), filled in as they come."""
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if _VIOLATION in message.text:
            violations.append(message.text)

    page.on("console", on_console)
    await page.add_init_script(_REPORT_VIOLATIONS)
    return violations


async def assert_injected_script_is_blocked(page: Page) -> None:
    """A script put into the page's DOM (as an XSS would) does not run, and the browser reports
    the violation (so ``watch_csp`` sees what it should)."""
    reported = page.expect_console_message(
        lambda message: _VIOLATION in message.text and "script-src" in message.text, timeout=5000
    )
    async with reported:
        await page.evaluate(
            """() => {
              const injected = document.createElement("script");
              injected.textContent = "window.injectedRan = true;";
              document.head.appendChild(injected);
            }"""
        )
    assert await page.evaluate("() => window.injectedRan") is None


def assert_strict_csp(policy: str | None) -> None:
    """Scripts only from the server's own files, no plugins, no <base> or foreign forms."""
    assert policy is not None
    directives = {}
    for directive in filter(None, (part.strip() for part in policy.split(";"))):
        name, _, value = directive.partition(" ")
        directives[name] = value
    assert directives["script-src"] == "'self'", policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, policy
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'", policy
    assert directives["form-action"] == "'self'" and directives["default-src"] == "'none'", policy
