"""Editing masks: the document being edited, reversible edits (patches), what each tool paints, clean-up operations and the crash journal."""
