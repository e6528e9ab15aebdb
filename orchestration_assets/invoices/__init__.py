"""The invoice-processing template: generated or user invoices → AI extraction → approved table."""
