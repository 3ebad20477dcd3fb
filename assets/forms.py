from django import forms
from django.contrib.auth import get_user_model

from .models import Library, LibraryMembership


class LibraryForm(forms.ModelForm):
    class Meta:
        model = Library
        fields = ["name"]

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner or getattr(self.instance, "owner", None)

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("A library needs a name.")
        clash = Library.objects.filter(owner=self.owner, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("You already have a library with this name.")
        return name


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=LibraryMembership.Role.choices, initial=LibraryMembership.Role.VIEWER)

    def __init__(self, *args, library=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.library = library

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(f"There is no user called {username!r}.")
        if user.pk == self.library.owner_id:
            raise forms.ValidationError("The owner already has full access.")
        self.user = user
        return username
