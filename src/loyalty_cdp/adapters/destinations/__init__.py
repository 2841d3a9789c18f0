"""Destinations: email (SMTP), SMS (Twilio), push (FCM), webhooks and retail-media audience files."""
