"""Promotion: register the challenger, compare it with the champion, move the alias, record why."""
