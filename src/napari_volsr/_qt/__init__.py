"""All Qt, magicgui and superqt code lives here."""
