"""Who may call and what is secret: API keys and the tenant they belong to, the admin keys API's
storage, and secrets at rest (Fernet)."""
