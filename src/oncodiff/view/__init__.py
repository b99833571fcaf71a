"""``oncodiff view``: a local web app to look at predictions and ask what-if questions.

The server (Starlette on uvicorn) serves one page, NiiVue (shipped in ``static/``, nothing fetched at run
time), a small JSON API over the existing prediction functions, and the NIfTI files under the run, cohort,
predictions and the viewer's own cache folder, nothing else.
"""

from oncodiff.view.app import create_app, serve
from oncodiff.view.folders import ViewerFolders

__all__ = ["ViewerFolders", "create_app", "serve"]
