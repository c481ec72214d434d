"""Identity: projects, API keys, users and their roles per project.

One PostgreSQL schema, ``identity``, that every service reads through this module. It is written only by the
``tally`` command (projects, keys, demo users) and the console's sign-up and admin pages.
"""

from tally_shared.identity.auth import CurrentPrincipal, Principal, Role, authenticate, require_principal
from tally_shared.identity.store import IdentityStore, hash_password, verify_password

__all__ = [
    "CurrentPrincipal",
    "IdentityStore",
    "Principal",
    "Role",
    "authenticate",
    "hash_password",
    "require_principal",
    "verify_password",
]
