"""Django settings of the local BottleCRM sandbox: crm.settings plus what a sandbox needs.

Read by the CRM's own Python (its virtualenv), never imported by Coulisse. Everything comes from
environment variables set by `coulisse stack` (coulisse/stack/crm.py):

- COULISSE_CRM_DB_ENGINE: "sqlite" (COULISSE_CRM_DB_NAME is the file) or "postgresql"
  (COULISSE_CRM_DB_NAME is the database; DBHOST, DBPORT, DBUSER, DBPASSWORD as crm.settings);
- SECRET_KEY: generated once by `coulisse stack up`, kept in the git-ignored .env;
- COULISSE_CRM_MAIL_DIR: where the CRM's outgoing email is written as files, so a test can
  prove that mirroring an invoice never emailed a customer.
"""

import os

from crm.settings import *  # noqa: F403
from crm.settings import LOGGING

_engine = os.environ.get("COULISSE_CRM_DB_ENGINE", "sqlite")
if _engine == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["COULISSE_CRM_DB_NAME"],
            "USER": os.environ.get("DBUSER", "postgres"),
            "PASSWORD": os.environ.get("DBPASSWORD", ""),
            "HOST": os.environ.get("DBHOST", "127.0.0.1"),
            "PORT": os.environ.get("DBPORT", "5432"),
            "CONN_MAX_AGE": 0,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["COULISSE_CRM_DB_NAME"],
            # Several gunicorn threads write: wait for the lock instead of failing at once.
            "OPTIONS": {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }

# Celery runs every task inside the request that queued it: no broker, no worker to start.
# (The package's default Redis broker fails every write with HTTP 500: kombu's Redis transport
# needs `packaging`, which django-crm does not install.)
CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = False

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# Outgoing email goes to files: nothing leaves the machine, and tests can read what was sent.
MAILERS = {
    "default": {
        "BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "OPTIONS": {"file_path": os.environ.get("COULISSE_CRM_MAIL_DIR", "crm-mail")},
    }
}

# crm.settings logs to files named relative to the working directory; keep them in our log dir.
_log_dir = os.environ.get("COULISSE_CRM_LOG_DIR", ".")
LOGGING["handlers"]["logfile"]["filename"] = os.path.join(_log_dir, "crm-server.log")  # noqa: PTH118
LOGGING["handlers"]["security_audit"]["filename"] = os.path.join(_log_dir, "crm-security.log")  # noqa: PTH118

# The API is all the sandbox serves; plain static storage needs no collectstatic manifest.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- LOCAL SANDBOX ONLY: webhooks to `coulisse serve` on 127.0.0.1 ---------------------------
# BottleCRM refuses to deliver webhooks to loopback or private addresses, over plain http, or to
# ports other than 443 (webhooks/ssrf.py), and no setting changes that. That is right for a CRM
# on a network; this sandbox's receiver (`coulisse serve`) listens on http://127.0.0.1:<port>.
# So, here and only here, the check lets through http://127.0.0.1:<any port>/... and nothing
# else: every other URL still goes through the CRM's own parse and resolve (public addresses,
# https, port 443). Never use this settings module for a CRM that faces a network.
import ipaddress as _ipaddress  # noqa: E402
from urllib.parse import urlsplit as _urlsplit  # noqa: E402

import webhooks.ssrf as _ssrf  # noqa: E402

_SANDBOX_RECEIVER_HOST = "127.0.0.1"
_crm_parse = _ssrf.parse
_crm_resolve = _ssrf.resolve


def _sandbox_parse(url):
    try:
        parts = _urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return _crm_parse(url)
    if (
        parts.scheme == "http"
        and parts.hostname == _SANDBOX_RECEIVER_HOST
        and parts.username is None
        and parts.password is None
    ):
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        return "http", _SANDBOX_RECEIVER_HOST, port or 80, target
    return _crm_parse(url)


def _sandbox_resolve(host, port):
    if host == _SANDBOX_RECEIVER_HOST:
        return [_ipaddress.ip_address(host)]
    return _crm_resolve(host, port)


_ssrf.parse = _sandbox_parse
_ssrf.resolve = _sandbox_resolve
