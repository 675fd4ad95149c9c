"""The headers of the pages the gateway serves itself (the dashboard, ``/docs``): each
loads only its own files and talks only to this instance."""

from __future__ import annotations


def page_headers(img_src: str = "'self'") -> dict[str, str]:
    """The policy and headers of a page whose images come from ``img_src``."""
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {img_src}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidate every time (cheap: ETag / Last-Modified), so an upgrade shows at once.
        "Cache-Control": "no-cache",
    }
