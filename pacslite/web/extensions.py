"""The Flask extensions the blueprints share, made here so that no blueprint imports the package."""
from __future__ import annotations

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
login_manager = LoginManager()
