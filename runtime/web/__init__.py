"""The web view: detections with photo, spectrogram and sound, reviews, charts and the unit's live state.

`edgeav serve` serves it over an existing log; the daemon serves the same app when `daemon.web.enabled`. Flask +
waitress (extra `web`), imported only when the web view runs. Modules: `app` (routes), `access` (login, CSRF,
headers), `queries` (the log), `spectrogram` (SVG from the evidence WAV), `server` (waitress, `edgeav serve`, the
daemon's hook), `settings`; templates/ and static/ ship in the package (no CDN).
"""
